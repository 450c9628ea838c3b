package e2e_test

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// resetPeakRSS starts pid's VmHWM again from its current RSS.
func resetPeakRSS(b *testing.B, pid int) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		b.Logf("peak RSS not reset: %v", err)
	}
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

// yardstick is a benchserver process (e2e/benchserver) on a free port.
type yardstick struct {
	url string
	cmd *exec.Cmd
}

// startYardstick builds benchserver once per run and starts it in mode.
func startYardstick(b *testing.B, exe, mode string, args ...string) *yardstick {
	b.Helper()
	cmd := exec.Command(exe, append([]string{mode, "127.0.0.1:0", testAppSecret}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		b.Fatalf("benchserver %s: %q, %v", mode, line, err)
	}
	return &yardstick{url: "http://" + addr + "/", cmd: cmd}
}

// BenchmarkIngest measures signed-webhook ingest of the real binary —
// every 200 means the payload is committed with synchronous=FULL — against
// two yardsticks with the same client in the same run, each its own
// process like the bridge: a bare handler that only reads the body and
// checks the HMAC (the ratio is measured against it), and the same
// handler that also commits the body through the bridge's own database
// and group-commit writer before answering (the floor: what durability
// alone costs with this storage on this machine).
//
// The headline figures are at 32 concurrent senders. Each server is then
// loaded at more senders too, because the three saturate at different
// concurrency (the bare handler is CPU-bound from the start, a durable one
// waits on fsync until enough senders share each commit): the ratio at
// each level and the ratio of the best throughputs are reported as well.
// WABRIDGE_BENCH_SECONDS sets each run's length (default 5),
// WABRIDGE_BENCH_CLIENTS the levels, the first being the headline
// (default "32,64,128,256").
func BenchmarkIngest(b *testing.B) {
	secs := 5
	if v, err := strconv.Atoi(os.Getenv("WABRIDGE_BENCH_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	run := time.Duration(secs) * time.Second
	levels := []int{32, 64, 128, 256}
	if v := os.Getenv("WABRIDGE_BENCH_CLIENTS"); v != "" {
		levels = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("WABRIDGE_BENCH_CLIENTS: %q is not a list of positive numbers", v)
			}
			levels = append(levels, n)
		}
	}
	body, sig := whatsapptest.NewBuilder().Text("Hallo, ich hätte gern einen Termin am Donnerstag um 10 Uhr. Geht das? Viele Grüße, Anna").Signed(testAppSecret)

	exe := filepath.Join(b.TempDir(), "benchserver")
	build := exec.Command("go", "build", "-tags", "netgo osusergo sqlite_omit_load_extension", "-o", exe, "./benchserver")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build benchserver: %v\n%s", err, out)
	}
	bare := startYardstick(b, exe, "bare")
	floor := startYardstick(b, exe, "durable", filepath.Join(b.TempDir(), "floor.db"))

	in := &inst{t: b, data: b.TempDir(), env: []string{"WABRIDGE_MASTER_KEY=" + newKey(b)}}
	const token = "bench-admin-token-0a1b2c3d4e5f"
	if r := in.run("config", "set", "meta.app_secret="+testAppSecret, "admin.token="+token); r.code != 0 {
		b.Fatalf("config: %+v", r)
	}
	srv := in.serve()
	defer srv.stop()
	hook := srv.url + "/webhook/whatsapp"
	// The backlog is read from the database file rather than /metrics,
	// whose admin-token check (argon2id, 19 MiB) would count in the peak
	// RSS; /metrics is read once, after the runs.
	d := openRO(b, in.data)

	b.ResetTimer()
	// Warm all three up, then measure one after the other.
	for _, u := range []string{bare.url, floor.url, hook} {
		load(b, u, body, sig, levels[0], time.Second)
	}
	// sweep loads url at every level; after, if not nil, runs after each.
	sweep := func(url string, pid int, after func(i int)) []measured {
		runs := make([]measured, len(levels))
		for i, c := range levels {
			cpu0 := cpuTime(pid)
			runs[i].loadResult = load(b, url, body, sig, c, run)
			runs[i].cpu = cpuTime(pid) - cpu0
			runs[i].clients = c
			if runs[i].failures > 0 {
				b.Fatalf("%s at %d senders: %d failures", url, c, runs[i].failures)
			}
			if after != nil {
				after(i)
			}
		}
		return runs
	}
	base := sweep(bare.url, bare.cmd.Process.Pid, nil)
	dur := sweep(floor.url, floor.cmd.Process.Pid, nil)
	// Processing is expected to lag behind the acknowledgements during
	// a burst (see relay/intake.go); how far, and how soon it catches up,
	// is reported too. Each level starts with nothing waiting.
	waiting := make([]int, len(levels))
	drain := make([]time.Duration, len(levels))
	waitAll(b, d)
	resetPeakRSS(b, srv.cmd.Process.Pid)
	var rssFirst int64
	real := sweep(hook, srv.cmd.Process.Pid, func(i int) {
		if i == 0 {
			rssFirst = peakRSS(srv.cmd.Process.Pid)
		}
		waiting[i] = waitingIn(b, d)
		drain[i] = waitAll(b, d)
	})
	rssAll := peakRSS(srv.cmd.Process.Pid)
	m := scrapeMetrics(b, srv.url, token)
	b.StopTimer()

	// The headline: the first level.
	b.ReportMetric(real[0].perSec(), "bridge_req/s")
	b.ReportMetric(ms(real[0].p50), "bridge_p50_ms")
	b.ReportMetric(ms(real[0].p99), "bridge_p99_ms")
	b.ReportMetric(real[0].cpuPerReq(), "bridge_cpu_us/req")
	b.ReportMetric(base[0].perSec(), "bare_req/s")
	b.ReportMetric(ms(base[0].p99), "bare_p99_ms")
	b.ReportMetric(base[0].cpuPerReq(), "bare_cpu_us/req")
	b.ReportMetric(dur[0].perSec(), "floor_req/s")
	b.ReportMetric(ms(dur[0].p99), "floor_p99_ms")
	b.ReportMetric(dur[0].cpuPerReq(), "floor_cpu_us/req")
	b.ReportMetric(real[0].perSec()/base[0].perSec(), "ratio")
	b.ReportMetric(dur[0].perSec()/base[0].perSec(), "floor_ratio")
	b.ReportMetric(float64(rssFirst)/(1<<20), "bridge_peak_rss_MB")
	b.ReportMetric(float64(waiting[0]), "waiting_at_end")
	b.ReportMetric(float64(real[0].requests-waiting[0])/real[0].elapsed.Seconds(), "processed_during/s")
	b.ReportMetric(drain[0].Seconds(), "caught_up_after_s")
	// Every level, and the best of each server.
	for i := 1; i < len(levels); i++ {
		c := levels[i]
		b.ReportMetric(real[i].perSec()/base[i].perSec(), fmt.Sprintf("ratio_at_%d", c))
		b.ReportMetric(real[i].perSec(), fmt.Sprintf("bridge_req/s_at_%d", c))
		b.ReportMetric(ms(real[i].p99), fmt.Sprintf("bridge_p99_ms_at_%d", c))
		b.ReportMetric(real[i].cpuPerReq(), fmt.Sprintf("bridge_cpu_us/req_at_%d", c))
		b.ReportMetric(float64(real[i].requests-waiting[i])/real[i].elapsed.Seconds(), fmt.Sprintf("processed_during/s_at_%d", c))
	}
	bp, fp, rp := peak(base), peak(dur), peak(real)
	b.ReportMetric(real[rp].perSec(), "bridge_best_req/s")
	b.ReportMetric(float64(real[rp].clients), "bridge_best_senders")
	b.ReportMetric(base[bp].perSec(), "bare_best_req/s")
	b.ReportMetric(float64(base[bp].clients), "bare_best_senders")
	b.ReportMetric(real[rp].perSec()/base[bp].perSec(), "best_ratio")
	b.ReportMetric(dur[fp].perSec()/base[bp].perSec(), "floor_best_ratio")
	b.ReportMetric(float64(rssAll)/(1<<20), "bridge_peak_rss_all_MB")
	if commits := m["wabridge_db_commits_total"]; commits > 0 {
		// Since the start, warm-up and every level included.
		b.ReportMetric(m["wabridge_db_group_writes_total"]/commits, "writes/commit")
	}
}

// measured is one load run at a number of concurrent senders, with the
// CPU time the server used during it.
type measured struct {
	loadResult
	clients int
	cpu     time.Duration
}

func (m measured) cpuPerReq() float64 {
	if m.requests == 0 {
		return 0
	}
	return float64(m.cpu.Microseconds()) / float64(m.requests)
}

// peak returns the index of the run with the highest throughput.
func peak(ms []measured) int {
	best := 0
	for i := range ms {
		if ms[i].perSec() > ms[best].perSec() {
			best = i
		}
	}
	return best
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// waitingIn counts the acknowledged webhooks not yet processed.
func waitingIn(b *testing.B, d *sql.DB) int {
	var n int
	if err := d.QueryRow(`SELECT count(*) FROM webhook_events WHERE status = 'accepted'`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// waitAll waits until the bridge has processed every acknowledged webhook
// and returns how long that took.
func waitAll(b *testing.B, d *sql.DB) time.Duration {
	start := time.Now()
	for waitingIn(b, d) > 0 {
		if time.Since(start) > 5*time.Minute {
			b.Fatal("webhooks still waiting after 5 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}
