package db

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLockFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := LockFolder(dir, "listening on 127.0.0.1:1")
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	// flock belongs to the open file, so a second open in this process
	// conflicts exactly as another process would.
	_, err = LockFolder(dir, "listening on 127.0.0.1:2")
	var locked *LockedError
	if !errors.As(err, &locked) || !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: got %v, want a LockedError", err)
	}
	if want := "pid " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("refusal %q does not name the holder (%s, 127.0.0.1:1)", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("refusal is not one line: %q", err)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := LockFolder(dir, "")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	defer again.Release()
	if fi, err := os.Stat(filepath.Join(dir, LockFileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, mode %v", err, fi.Mode())
	}
}
