package waypoint

// SetTransportOnly makes w send every upstream HTTP request through http.Transport, as
// it did before h1Client, or not: a benchmark compares both in one run.
func SetTransportOnly(w *Waypoint, on bool) { w.transports.transportOnly.Store(on) }
