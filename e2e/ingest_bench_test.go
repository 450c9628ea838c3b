package e2e_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"wabridge/whatsapp/whatsapptest"
)

// loadResult is one load run: throughput and latency percentiles.
type loadResult struct {
	requests int
	failures int
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (r loadResult) perSec() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// load posts body with sig to url from clients goroutines for d.
func load(b *testing.B, url string, body []byte, sig string, clients int, d time.Duration) loadResult {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var mu sync.Mutex
	var lat []time.Duration
	failures := 0
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			bad := 0
			for time.Now().Before(stop) {
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Hub-Signature-256", sig)
				t0 := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					bad++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			failures += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := loadResult{requests: len(lat), failures: failures, elapsed: time.Since(start)}
	slices.Sort(lat)
	if len(lat) > 0 {
		r.p50 = lat[len(lat)/2]
		r.p99 = lat[len(lat)*99/100]
	}
	return r
}

// peakRSS returns the VmHWM of pid in bytes.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// cpuTime returns the user plus system CPU time pid has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after it are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// The kernel counts in clock ticks, 100 per second on Linux.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// BenchmarkIngest measures signed-webhook ingest of the real binary —
// every 200 means the payload and its job are committed with
// synchronous=FULL — against a bare handler that only reads the body and
// checks the HMAC, with the same client, in the same run. The ratio is the
// cost of durability. WABRIDGE_BENCH_SECONDS sets each run's length
// (default 5).
func BenchmarkIngest(b *testing.B) {
	secs := 5
	if v, err := strconv.Atoi(os.Getenv("WABRIDGE_BENCH_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	const clients = 32
	body, sig := whatsapptest.NewBuilder().Text("Hallo, ich hätte gern einen Termin am Donnerstag um 10 Uhr. Geht das? Viele Grüße, Anna").Signed(testAppSecret)

	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(io.LimitReader(r.Body, 3<<20))
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		mac := hmac.New(sha256.New, []byte(testAppSecret))
		mac.Write(raw)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if !hmac.Equal([]byte(want), []byte(r.Header.Get("X-Hub-Signature-256"))) {
			http.Error(w, "signature", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer bare.Close()

	in := &inst{t: b, data: b.TempDir(), env: []string{"WABRIDGE_MASTER_KEY=" + newKey(b)}}
	if r := in.run("config", "set", "meta.app_secret="+testAppSecret); r.code != 0 {
		b.Fatalf("config: %+v", r)
	}
	srv := in.serve()
	defer srv.stop()

	b.ResetTimer()
	// Warm both up, then measure side by side.
	load(b, bare.URL, body, sig, clients, time.Second)
	load(b, srv.url+"/webhook/whatsapp", body, sig, clients, time.Second)
	base := load(b, bare.URL, body, sig, clients, time.Duration(secs)*time.Second)
	cpu0 := cpuTime(srv.cmd.Process.Pid)
	real := load(b, srv.url+"/webhook/whatsapp", body, sig, clients, time.Duration(secs)*time.Second)
	cpu := cpuTime(srv.cmd.Process.Pid) - cpu0
	b.StopTimer()
	if real.failures > 0 || base.failures > 0 {
		b.Fatalf("failures: bridge %d, bare %d", real.failures, base.failures)
	}
	rss := peakRSS(srv.cmd.Process.Pid)
	b.ReportMetric(real.perSec(), "bridge_req/s")
	b.ReportMetric(float64(real.p50.Microseconds())/1000, "bridge_p50_ms")
	b.ReportMetric(float64(real.p99.Microseconds())/1000, "bridge_p99_ms")
	b.ReportMetric(base.perSec(), "bare_req/s")
	b.ReportMetric(float64(base.p99.Microseconds())/1000, "bare_p99_ms")
	b.ReportMetric(real.perSec()/base.perSec(), "ratio")
	b.ReportMetric(float64(rss)/(1<<20), "bridge_peak_rss_MB")
	if real.requests > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(real.requests), "bridge_cpu_us/req")
	}
}
