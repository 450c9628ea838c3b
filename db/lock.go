package db

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LockFileName is the file in the data folder that the running server holds
// an exclusive lock on.
const LockFileName = "serve.lock"

// ErrLocked is returned by LockFolder when another process holds the lock.
var ErrLocked = errors.New("data folder in use")

// FolderLock is the server's exclusive hold on a data folder. Two servers
// on one file would both relay every stored message and race on the
// portal's single-use refresh token, so the second one must not start. The
// lock is the kernel's (flock), which ends with the process however it
// ends: a crashed server leaves no stale lock behind.
type FolderLock struct {
	f *os.File
}

// LockedError says which process holds the data folder.
type LockedError struct {
	Dir   string
	Owner string // as the owner wrote it: "pid 123, started …", or empty
}

func (e *LockedError) Error() string {
	who := "another wabridge serve"
	if e.Owner != "" {
		who += " (" + e.Owner + ")"
	}
	return fmt.Sprintf("%s is already running on the data folder %s: stop it first, or give this one another --data folder", who, e.Dir)
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// LockFolder takes the exclusive lock on dir (creating the folder if it is
// missing) without waiting, and records who holds it (pid, start time and
// what) so that a refused second server can name the first. It returns a
// *LockedError when another process holds it.
func LockFolder(dir, what string) (*FolderLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("db: lock folder: create %s: %w", dir, err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("db: lock folder: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			owner = strings.TrimSpace(string(b))
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir, Owner: owner}
		}
		return nil, fmt.Errorf("db: lock folder %s: %w", dir, err)
	}
	owner := "pid " + strconv.Itoa(os.Getpid()) + ", started " + time.Now().UTC().Format(time.RFC3339)
	if what != "" {
		owner += ", " + what
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(owner+"\n"), 0)
	}
	return &FolderLock{f: f}, nil
}

// Release gives the lock up. The file stays: removing it would let a
// process that opened it before the removal lock a file no one else sees.
func (l *FolderLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}
