// Command smokeapp is the test application of `make cluster-smoke`: one
// static binary that is both an HTTP server and its client, so an image of
// it alone can be served from, exec'd into and used to probe a Service.
//
//	smokeapp serve [-addr :8080]   answers every request with "hello from <hostname>"
//	smokeapp get URL               prints the body of GET URL; exits 1 unless it is 200 OK
//	smokeapp whoami                asks the apiserver (in-cluster: the kubernetes Service, the
//	                               pod's service-account token and CA) who it is; prints the user name
//	smokeapp resolve NAME          looks NAME up through the pod's resolv.conf (cluster DNS, search
//	                               path); prints its addresses, sorted, one per line
//	smokeapp load [-interval D] URL  GETs URL every D on a new connection each time until stopped;
//	                               prints each failure, and the running totals once a second
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

// serviceAccountDir is where the kubelet mounts a pod's service-account token and CA.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: smokeapp serve [-addr :8080] | get URL | whoami | resolve NAME | load [-interval D] URL")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	case "whoami":
		err = whoami()
	case "resolve":
		err = resolve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "smokeapp:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", ":8080", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, err := os.Hostname()
	if err != nil {
		return err
	}
	logger := log.New(os.Stdout, "", log.LstdFlags)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger.Printf("%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	logger.Printf("smokeapp serving on %s", *addr)
	server := &http.Server{Addr: *addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	// As PID 1 of its container it gets no default SIGTERM action: without
	// this, deleting the pod waits out its whole grace period.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func get(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("get needs one URL")
	}
	body, err := fetch(context.Background(), &http.Client{Timeout: 5 * time.Second}, args[0])
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(body)
	return err
}

// load is steady traffic for an upgrade: one GET per interval, each on a new
// connection, so that every request also tests connection set-up through the
// mesh. Each failure is printed as "FAIL <error>", and the totals as
// "sent=<n> failed=<m>" once a second and when it is stopped.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	interval := fs.Duration("interval", 50*time.Millisecond, "time between requests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("load needs one URL")
	}
	url := fs.Arg(0)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	tick, report := time.NewTicker(*interval), time.NewTicker(time.Second)
	defer tick.Stop()
	defer report.Stop()
	sent, failed := 0, 0
	for {
		select {
		case <-ctx.Done():
			fmt.Printf("sent=%d failed=%d\n", sent, failed)
			return nil
		case <-report.C:
			fmt.Printf("sent=%d failed=%d\n", sent, failed)
		case <-tick.C:
			sent++
			if _, err := fetch(ctx, client, url); err != nil && ctx.Err() == nil {
				failed++
				fmt.Printf("FAIL %v\n", err)
			}
		}
	}
}

// fetch GETs url and returns the whole body; anything but 200 OK fails.
func fetch(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// resolve prints the addresses NAME resolves to with Go's own resolver,
// which reads the pod's /etc/resolv.conf as any static binary would.
func resolve(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("resolve needs one name")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
	if err != nil {
		return err
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}

// whoami posts a SelfSubjectReview the way an in-cluster client reaches
// the apiserver, and prints the user name it was authenticated as.
func whoami() error {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return fmt.Errorf("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	token, err := os.ReadFile(serviceAccountDir + "/token")
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificate in %s/ca.crt", serviceAccountDir)
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "kubernetes.default.svc"}},
	}
	url := "https://" + net.JoinHostPort(host, port) + "/apis/authentication.k8s.io/v1/selfsubjectreviews"
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewBufferString(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, body)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &review); err != nil {
		return err
	}
	fmt.Println(review.Status.UserInfo.Username)
	return nil
}
