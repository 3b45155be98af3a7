package rules

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sync"
)

// Watcher holds the rules loaded from a file and reloads them when the file's content
// changes, including when a mounted ConfigMap swaps its symlinks. An invalid new file keeps
// the old rules, and so does any panic while loading one.
type Watcher struct {
	path string
	// load turns the file's content into rules: loadData, or a stand-in in tests.
	load func(path string, data []byte) (*Rules, error)

	mu      sync.Mutex
	current *Rules
	sum     [sha256.Size]byte
	// failedSum is the content that failed last, so its problems are reported once.
	failedSum [sha256.Size]byte
	// lastErr is the problem with the newest file, nil when it loaded.
	lastErr error
}

// NewWatcher loads path; it fails when the first load does.
func NewWatcher(path string) (*Watcher, error) {
	w := &Watcher{path: path, load: loadData}
	if _, err := w.Reload(); err != nil {
		return nil, err
	}
	return w, nil
}

// Rules returns the rules in force.
func (w *Watcher) Rules() *Rules {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// Valid reports whether the newest file loaded (false while old rules are kept).
func (w *Watcher) Valid() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr == nil
}

// Reload reads the file again. changed is true when new rules took effect; err holds the
// new file's problems (an ErrorList), an I/O error, or an *InternalError when loading
// panicked; in each case the old rules stay in force. A file whose content is unchanged
// since the last call is not parsed again, and problems already reported are not reported
// again (Valid still says false).
func (w *Watcher) Reload() (changed bool, err error) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.fail(err, [sha256.Size]byte{})
		return false, fmt.Errorf("reading rules: %w", err)
	}
	sum := sha256.Sum256(data)
	w.mu.Lock()
	same := w.current != nil && bytes.Equal(sum[:], w.sum[:])
	reported := w.lastErr != nil && bytes.Equal(sum[:], w.failedSum[:])
	w.mu.Unlock()
	if same || reported {
		return false, nil
	}
	r, err := w.safeLoad(data)
	if err != nil {
		w.fail(err, sum)
		var list ErrorList
		if errors.As(err, &list) {
			return false, list
		}
		return false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.current, w.sum, w.lastErr = r, sum, nil
	return true, nil
}

// safeLoad runs the load function, turning a panic into an *InternalError: a controller
// must outlive any rules file.
func (w *Watcher) safeLoad(data []byte) (r *Rules, err error) {
	defer recoverInto(w.path, &r, &err)
	r, err = w.load(w.path, data)
	if err == nil && r == nil {
		err = fmt.Errorf("loading %s: no rules and no error", w.path)
	}
	return r, err
}

func (w *Watcher) fail(err error, sum [sha256.Size]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastErr, w.failedSum = err, sum
	// Going back to the content in force must load it again.
	w.sum = [sha256.Size]byte{}
}
