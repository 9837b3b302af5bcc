package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/syvault/syvault/internal/termtext"
)

// atomicFile is a file written under a temporary name in its final directory and renamed
// into place, so readers see either the old content or all of the new, never part of it.
// The temporary file is created before the data exists (so an unwritable path fails
// before anything is asked of the server) and has mode 0600 from the start.
type atomicFile struct {
	path string
	tmp  *os.File
}

// createAtomic prepares path for writing. The caller must call commit or abort.
func createAtomic(path string) (*atomicFile, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("cannot write %s: it is a directory", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", path, pathErrCause(err))
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("cannot write %s: %w", path, pathErrCause(err))
	}
	return &atomicFile{path: path, tmp: tmp}, nil
}

// commit writes data, flushes it to disk and renames the file into place. On failure the
// temporary file is removed and path is left as it was.
func (f *atomicFile) commit(data []byte) error {
	if err := f.stage(data); err != nil {
		return err
	}
	return f.place()
}

// syncFile flushes a temporary file to disk; tests replace it to fail one.
var syncFile = (*os.File).Sync

// stage writes data to the temporary file, flushes it to disk and closes it: all that
// may fail for want of space or quota, before anything is renamed into place.
func (f *atomicFile) stage(data []byte) (err error) {
	defer func() {
		if err != nil {
			f.tmp.Close()
			os.Remove(f.tmp.Name())
			err = fmt.Errorf("cannot write %s: %w", f.path, pathErrCause(err))
		}
	}()
	if _, err := f.tmp.Write(data); err != nil {
		return err
	}
	if err := syncFile(f.tmp); err != nil {
		return err
	}
	return f.tmp.Close()
}

// place renames the staged file into place.
func (f *atomicFile) place() error {
	if err := os.Rename(f.tmp.Name(), f.path); err != nil {
		os.Remove(f.tmp.Name())
		return fmt.Errorf("cannot write %s: %w", f.path, pathErrCause(err))
	}
	// Make the rename itself durable; not every file system supports syncing a directory.
	if dir, err := os.Open(filepath.Dir(f.path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

// abort removes the temporary file. It is a no-op after a commit.
func (f *atomicFile) abort() {
	f.tmp.Close()
	if _, err := os.Stat(f.tmp.Name()); err == nil {
		os.Remove(f.tmp.Name())
	}
}

// pathErrCause drops the temporary file's name from a *fs.PathError: the user named
// the final path, which the caller's message already carries.
func pathErrCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError // a failed rename names both files
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// shellQuote quotes s for a POSIX shell: inside single quotes nothing is special, and each
// single quote in s closes the quotes, adds an escaped quote and reopens them.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeExports writes name=value pairs as shell export lines, in order.
func writeExports(w io.Writer, pairs ...string) error {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(&b, "export %s=%s\n", pairs[i], shellQuote(pairs[i+1]))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	data, err := marshalJSON(v)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func marshalJSON(v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// formatTime shows a time as RFC 3339 UTC, or "-" for none.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// enumValue is a flag value restricted to a fixed set, so a wrong value is a usage error.
type enumValue struct {
	value   string
	allowed []string
}

func newEnum(def string, allowed ...string) *enumValue {
	return &enumValue{value: def, allowed: allowed}
}

func (e *enumValue) String() string { return e.value }
func (e *enumValue) Type() string   { return "string" }
func (e *enumValue) Set(s string) error {
	for _, a := range e.allowed {
		if s == a {
			e.value = s
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(e.allowed, ", "))
}

// ttlValue is a duration flag in whole seconds: "3600" or a Go duration like "1h".
type ttlValue int

func (t *ttlValue) String() string { return strconv.Itoa(int(*t)) }
func (t *ttlValue) Type() string   { return "seconds" }
func (t *ttlValue) Set(s string) error {
	if n, err := strconv.Atoi(s); err == nil {
		*t = ttlValue(n)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d%time.Second != 0 {
		return errors.New("must be whole seconds, like 3600 or 1h")
	}
	*t = ttlValue(d / time.Second)
	return nil
}

// tableRow writes cells as one tab-separated row (for a tabwriter), each printable.
func tableRow(w io.Writer, cells ...string) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		io.WriteString(w, termtext.Printable(c))
	}
	io.WriteString(w, "\n")
}
