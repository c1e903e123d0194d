package identity

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/ambientmesh/ambient-operator/internal/meshconfig"
	"github.com/ambientmesh/ambient-operator/internal/spiffe"
	"github.com/ambientmesh/ambient-operator/internal/testca"
	"github.com/ambientmesh/ambient-operator/internal/testwait"
)

const testNamespace = "ambient-system"

func mustRoot(t *testing.T, pemText string) trustRoot {
	t.Helper()
	r, err := parseTrustRoot(pemText)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTrustBundleKeepsARetiringRootUntilItsCertificatesCanHaveExpired(t *testing.T) {
	old, cur := mustRoot(t, testca.New(t).PEM), mustRoot(t, testca.New(t).PEM)
	older := mustRoot(t, testca.New(t).PEM)
	until := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	records := rootRecords{old.fingerprint: {PEM: old.pem, IssuedUntil: until}}
	both := rootRecords{old.fingerprint: records[old.fingerprint], older.fingerprint: {PEM: older.pem, IssuedUntil: until}}
	byFingerprint := []trustRoot{old, older}
	if older.fingerprint < old.fingerprint {
		byFingerprint = []trustRoot{older, old}
	}
	tests := []struct {
		name    string
		current []trustRoot
		records rootRecords
		now     time.Time
		want    []trustRoot
	}{
		{"certificates under the old root are still valid", []trustRoot{cur}, records, until.Add(-time.Hour), []trustRoot{cur, old}},
		{"the last one expired, within the clock-skew margin", []trustRoot{cur}, records, until.Add(RootRetirementSkew - time.Second), []trustRoot{cur, old}},
		{"the margin has passed", []trustRoot{cur}, records, until.Add(RootRetirementSkew), []trustRoot{cur}},
		{"a current root that is also recorded is listed once, first", []trustRoot{old}, records, until.Add(-time.Hour), []trustRoot{old}},
		{"a current root stays after its record retired", []trustRoot{old}, records, until.Add(time.Hour), []trustRoot{old}},
		{"before the control plane's certificate is loaded", nil, records, until.Add(-time.Hour), []trustRoot{old}},
		{"retiring roots in fingerprint order", []trustRoot{cur}, both, until.Add(-time.Hour), append([]trustRoot{cur}, byFingerprint...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := trustBundle(tt.current, tt.records, tt.now); !slices.Equal(got, tt.want) {
				t.Errorf("bundle = %v, want %v", fingerprints(got), fingerprints(tt.want))
			}
		})
	}
}

func fingerprints(roots []trustRoot) []string {
	out := make([]string, len(roots))
	for i, r := range roots {
		out[i] = r.fingerprint[:8]
	}
	return out
}

func TestRootRecordsCoverEveryCertificateIssued(t *testing.T) {
	root := mustRoot(t, testca.New(t).PEM)
	notAfter := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		recorded    time.Time // zero: no record
		notAfter    time.Time
		wantCovered bool
		wantUntil   time.Time
	}{
		{"first certificate under the root", time.Time{}, notAfter, false, notAfter.Add(issuedUntilStep)},
		{"a later certificate within the recorded step", notAfter.Add(issuedUntilStep), notAfter.Add(issuedUntilStep - time.Second), true, notAfter.Add(issuedUntilStep)},
		{"a certificate past the record", notAfter, notAfter.Add(time.Second), false, notAfter.Add(time.Second + issuedUntilStep)},
		{"an earlier certificate never shortens the record", notAfter, notAfter.Add(-time.Hour), true, notAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := rootRecords{}
			if !tt.recorded.IsZero() {
				rs[root.fingerprint] = rootRecord{PEM: root.pem, IssuedUntil: tt.recorded}
			}
			if got := rs.covers([]trustRoot{root}, tt.notAfter); got != tt.wantCovered {
				t.Errorf("covers = %v, want %v", got, tt.wantCovered)
			}
			rs.cover([]trustRoot{root}, tt.notAfter)
			if got := rs[root.fingerprint].IssuedUntil; !got.Equal(tt.wantUntil) {
				t.Errorf("recorded until %v, want %v", got, tt.wantUntil)
			}
			if !rs.covers([]trustRoot{root}, tt.notAfter) {
				t.Error("after cover, the certificate is not covered")
			}
		})
	}
}

// trustFixture is a TrustRoots on a fake API server with a fake clock, recording what it
// publishes.
type trustFixture struct {
	*TrustRoots
	clock *clocktesting.FakeClock
	api   client.WithWatch

	mu        sync.Mutex
	published [][]string
	awaited   [][]string
}

func newTrustFixture(t *testing.T, api client.WithWatch, clk *clocktesting.FakeClock) *trustFixture {
	f := &trustFixture{clock: clk, api: api}
	f.TrustRoots = NewTrustRoots(TrustRootsOptions{
		Client: api, Namespace: testNamespace, Clock: clk, Log: logr.Discard(),
		Publish: func(b []string) { f.mu.Lock(); f.published = append(f.published, b); f.mu.Unlock() },
		AwaitPublished: func(_ context.Context, b []string) {
			f.mu.Lock()
			f.awaited = append(f.awaited, b)
			f.mu.Unlock()
		},
	})
	return f
}

func (f *trustFixture) lastPublished() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.published) == 0 {
		return nil
	}
	return f.published[len(f.published)-1]
}

// record reads the ConfigMap's record.
func (f *trustFixture) record(t *testing.T) rootRecords {
	t.Helper()
	var cm corev1.ConfigMap
	if err := f.api.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: TrustRootsConfigMap}, &cm); err != nil {
		t.Fatal(err)
	}
	rs, err := decodeRootRecords(cm.Data[TrustRootsKey])
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func pems(cas ...*testca.CA) []string {
	out := make([]string, len(cas))
	for i, ca := range cas {
		out[i] = ca.PEM
	}
	return out
}

func TestTrustRootsPublishOldAndNewRootsThenRetireTheOldOnTheClock(t *testing.T) {
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second)
	f := newTrustFixture(t, fake.NewClientBuilder().Build(), clocktesting.NewFakeClock(start))
	oldCA, newCA := testca.New(t), testca.New(t)

	f.SetCurrent(pems(oldCA))
	if err := f.Issued(ctx, pems(oldCA), start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := f.lastPublished(); !slices.Equal(got, pems(oldCA)) {
		t.Fatalf("published %d roots before the rotation, want the old root alone", len(got))
	}

	// The issuer's root rotates: the next certificate is under the new root.
	if err := f.Issued(ctx, pems(newCA), start.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := f.lastPublished(); !slices.Equal(got, pems(oldCA, newCA)) {
		t.Fatalf("published %d roots right after the rotation, want old (the control plane's) and new", len(got))
	}
	f.SetCurrent(pems(newCA)) // the control plane's own certificate is renewed under the new root
	if got := f.lastPublished(); !slices.Equal(got, pems(newCA, oldCA)) {
		t.Fatalf("published %d roots, want new and the retiring old one", len(got))
	}
	if got := f.Roots(); !slices.Equal(got, pems(newCA, oldCA)) {
		t.Errorf("Roots() = %d roots, want the published bundle", len(got))
	}
	for _, ca := range []*testca.CA{oldCA, newCA} {
		leaf := ca.Issue(t, spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"})
		if _, err := leaf.Leaf.Verify(x509VerifyOptions(f.Pool())); err != nil {
			t.Errorf("a certificate under %s does not verify against Pool(): %v", ca.Cert.Subject, err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() { defer close(done); f.Run(runCtx) }()
	defer func() { stop(); <-done }()

	retiresAt := start.Add(time.Hour + issuedUntilStep + RootRetirementSkew)
	testwait.For(t, "Run arms the retirement timer", 10*time.Second, f.clock.HasWaiters)
	f.clock.SetTime(retiresAt.Add(-time.Second))
	if got := f.Roots(); len(got) != 2 {
		t.Fatalf("a second before the old root retires the bundle has %d roots, want 2", len(got))
	}
	testwait.For(t, "Run re-arms the retirement timer", 10*time.Second, f.clock.HasWaiters)
	f.clock.SetTime(retiresAt)
	testwait.For(t, "the old root is retired and the bundle published without it", 10*time.Second, func() bool {
		return slices.Equal(f.lastPublished(), pems(newCA))
	})
	if got := f.Roots(); !slices.Equal(got, pems(newCA)) {
		t.Errorf("Roots() has %d roots after the retirement, want the new root alone", len(got))
	}
	// The next write of the record forgets the retired root.
	if err := f.Issued(ctx, pems(newCA), retiresAt.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if rec := f.record(t); len(rec) != 1 || !rec.covers([]trustRoot{mustRoot(t, newCA.PEM)}, retiresAt.Add(24*time.Hour)) {
		t.Errorf("the record after the old root retired holds %d roots, want the new one alone", len(rec))
	}
}

func TestTrustRootsRestartFromTheRecord(t *testing.T) {
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second)
	mesh := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: meshconfig.ConfigMapName, UID: "mesh-uid"}}
	api := fake.NewClientBuilder().WithObjects(mesh).Build()
	oldCA, newCA := testca.New(t), testca.New(t)

	before := newTrustFixture(t, api, clocktesting.NewFakeClock(start))
	before.SetCurrent(pems(newCA))
	if err := before.Issued(ctx, pems(oldCA), start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	restarted := newTrustFixture(t, api, clocktesting.NewFakeClock(start.Add(time.Minute)))
	if err := restarted.Load(ctx); err != nil {
		t.Fatal(err)
	}
	restarted.SetCurrent(pems(newCA))
	if got := restarted.Roots(); !slices.Equal(got, pems(newCA, oldCA)) {
		t.Errorf("after a restart the bundle has %d roots, want the control plane's and the retiring one from the record", len(got))
	}

	var cm corev1.ConfigMap
	if err := api.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: TrustRootsConfigMap}, &cm); err != nil {
		t.Fatal(err)
	}
	if refs := cm.OwnerReferences; len(refs) != 1 || refs[0].UID != mesh.UID || refs[0].Kind != "ConfigMap" {
		t.Errorf("owner references %+v, want the mesh ConfigMap (removed with the mesh)", refs)
	}
	var raw map[string]rootRecord
	if err := json.Unmarshal([]byte(cm.Data[TrustRootsKey]), &raw); err != nil {
		t.Fatalf("the record is not JSON: %v", err)
	}
	old := mustRoot(t, oldCA.PEM)
	if rec := raw[old.fingerprint]; rec.PEM != old.pem || !rec.IssuedUntil.Equal(start.Add(time.Hour+issuedUntilStep)) {
		t.Errorf("the record has %+v for the old root, want its PEM until the certificate's expiry plus %v", rec, issuedUntilStep)
	}
}

func TestTrustRootsWriteTheRecordOncePerStepAndNeverBehind(t *testing.T) {
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second)
	writes := 0
	api := interceptor.NewClient(fake.NewClientBuilder().Build(), interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			writes++
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			writes++
			return c.Update(ctx, obj, opts...)
		},
	})
	f := newTrustFixture(t, api, clocktesting.NewFakeClock(start))
	ca := testca.New(t)
	// A certificate a second for 20 minutes, each valid for 24 hours.
	for i := range 20 * 60 {
		notAfter := start.Add(24*time.Hour + time.Duration(i)*time.Second)
		if err := f.Issued(ctx, pems(ca), notAfter); err != nil {
			t.Fatal(err)
		}
		if rec := f.record(t)[mustRoot(t, ca.PEM).fingerprint]; rec.IssuedUntil.Before(notAfter) {
			t.Fatalf("certificate %d (until %v) handed out while the record says %v", i, notAfter, rec.IssuedUntil)
		}
	}
	if writes != 2 {
		t.Errorf("%d writes of the record for 20 minutes of certificates, want 2 (one per %v)", writes, issuedUntilStep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.awaited) != 1 || !slices.Equal(f.awaited[0], pems(ca)) {
		t.Errorf("waited for the proxies %d times, want once, for the first certificate under the root, with the bundle holding it", len(f.awaited))
	}
}

func TestTrustRootsReplicasMergeTheirRecords(t *testing.T) {
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second)
	base := fake.NewClientBuilder().Build()
	caA, caB := testca.New(t), testca.New(t)
	a := newTrustFixture(t, base, clocktesting.NewFakeClock(start))
	raced := false
	// Replica B's first write races with replica A's: A writes between B's read and B's update.
	b := newTrustFixture(t, interceptor.NewClient(base, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if !raced {
				raced = true
				if err := a.Issued(ctx, pems(caA), start.Add(2*time.Hour)); err != nil {
					t.Errorf("replica A: %v", err)
				}
			}
			return c.Create(ctx, obj, opts...)
		},
	}), clocktesting.NewFakeClock(start))

	if err := b.Issued(ctx, pems(caB), start.Add(time.Hour)); err != nil {
		t.Fatalf("replica B after losing the race: %v", err)
	}
	rec := b.record(t)
	if len(rec) != 2 || !rec.covers([]trustRoot{mustRoot(t, caA.PEM)}, start.Add(2*time.Hour)) || !rec.covers([]trustRoot{mustRoot(t, caB.PEM)}, start.Add(time.Hour)) {
		t.Errorf("the record after both replicas wrote: %v, want both roots until their certificates expire", rec)
	}
	if err := a.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if len(a.Roots()) != 2 || len(b.Roots()) != 2 {
		t.Errorf("replica A has %d roots, B %d, want both to publish both", len(a.Roots()), len(b.Roots()))
	}
}

func TestTrustRootsRefuseWhenTheRecordCannotBeWritten(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, TrustRootsConfigMap, errors.New("no RBAC"))
	api := interceptor.NewClient(fake.NewClientBuilder().Build(), interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error { return forbidden },
	})
	start := time.Now().UTC()
	f := newTrustFixture(t, api, clocktesting.NewFakeClock(start))
	err := f.Issued(context.Background(), pems(testca.New(t)), start.Add(time.Hour))
	if !apierrors.IsForbidden(err) {
		t.Errorf("Issued = %v, want the API server's refusal", err)
	}
	if got := f.Roots(); len(got) != 0 {
		t.Errorf("the bundle has %d roots after the record failed, want none (nothing may be handed out under it)", len(got))
	}
}

// TestCAAnswersWithTheBundleAfterRecording checks what a waypoint gets from the CA: the
// issuer's root, then the retiring one, and that the certificate was recorded first.
func TestCAAnswersWithTheBundleAfterRecording(t *testing.T) {
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second)
	f := newTrustFixture(t, fake.NewClientBuilder().Build(), clocktesting.NewFakeClock(start))
	oldCA, newCA := testca.New(t), testca.New(t)
	f.SetCurrent(pems(oldCA))
	if err := f.Issued(ctx, pems(oldCA), start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	ca := &CA{opts: CAOptions{Trust: f.TrustRoots}}

	leaf := newCA.Issue(t, spiffe.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"})
	resp, got, err := ca.response(ctx, &Signed{CertificatePEM: pemOf(leaf.Leaf.Raw), CAPEM: []byte(newCA.PEM)})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(leaf.Leaf) {
		t.Error("response returned another leaf")
	}
	if !slices.Equal(resp.Roots, pems(newCA, oldCA)) {
		t.Errorf("answer roots: %d, want the issuer's new root, then the old one", len(resp.Roots))
	}
	if !f.record(t).covers([]trustRoot{mustRoot(t, newCA.PEM)}, leaf.Leaf.NotAfter) {
		t.Error("the certificate was answered without being recorded under its root")
	}
}

func FuzzDecodeRootRecords(f *testing.F) {
	root := testca.New(f)
	seed, _ := json.Marshal(map[string]rootRecord{"x": {PEM: root.PEM, IssuedUntil: time.Now()}})
	f.Add(string(seed))
	f.Add(`{"a":{"pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","issuedUntil":"2030-01-01T00:00:00Z"}}`)
	f.Add(`[]`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, data string) {
		rs, _ := decodeRootRecords(data)
		for fp, rec := range rs {
			r, err := parseTrustRoot(rec.PEM)
			if err != nil || r.fingerprint != fp {
				t.Fatalf("decoded entry %q does not hold the certificate of that fingerprint (%v)", fp, err)
			}
		}
	})
}

func x509VerifyOptions(roots *x509.CertPool) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}

func pemOf(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
