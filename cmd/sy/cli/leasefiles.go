package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/syvault/syvault/http/client"
)

// leaseEnv is a lease's credentials as environment variables (name, value, name, ...),
// in the order --format env prints them; sy agent --exec gives them to the application.
func leaseEnv(l *client.Lease) []string {
	return []string{
		"SY_LEASE_ID", l.LeaseID,
		"SY_DB_USERNAME", l.Username,
		"SY_DB_PASSWORD", l.Password,
		"SY_DB_CONNECTION_STRING", l.ConnectionString,
		"SY_LEASE_EXPIRES_AT", formatTime(l.ExpiresAt),
	}
}

// leaseRevoker is the one call undelivered needs.
type leaseRevoker interface {
	RevokeLease(ctx context.Context, id string) error
}

// undelivered revokes a lease whose credentials could not be handed over (err says why),
// so that no database user nobody received is left behind, and returns err with what
// became of the lease.
func (a *app) undelivered(ctx context.Context, c leaseRevoker, l *client.Lease, err error) error {
	if rerr := c.RevokeLease(ctx, l.LeaseID); rerr != nil {
		return fmt.Errorf("%w; lease %s was created and could not be revoked (%s), revoke it with: sy dynamic lease revoke %s",
			err, l.LeaseID, a.describe(ctx, rerr), l.LeaseID)
	}
	return fmt.Errorf("%w; lease %s was revoked again", err, l.LeaseID)
}

// templateFuncs are what a --template may call besides text/template's own functions.
var templateFuncs = template.FuncMap{
	"shellquote": shellQuote,
	"pgpass":     pgpassEscape,
}

// pgpassEscape escapes a field of a .pgpass line, where ':' separates fields.
func pgpassEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// leaseTemplate is one --template IN:OUT: a text/template file rendered over the lease
// (a *client.Lease) into OUT.
type leaseTemplate struct {
	in, out string
	tmpl    *template.Template
}

// splitTemplateFlag splits a --template value at its first colon.
func splitTemplateFlag(v string) (in, out string, err error) {
	in, out, ok := strings.Cut(v, ":")
	if !ok || in == "" || out == "" {
		return "", "", usagef("--template %q must be IN:OUT, a template file and the file to render it to", v)
	}
	return in, out, nil
}

// loadTemplate reads and parses the template file in. It is also rendered once over an
// empty lease, so that a misspelt field fails now, before any lease exists.
func loadTemplate(in, out string) (*leaseTemplate, error) {
	data, err := os.ReadFile(in)
	if err != nil {
		return nil, fmt.Errorf("reading the template: %w", err)
	}
	t, err := template.New(filepath.Base(in)).Funcs(templateFuncs).Parse(string(data))
	if err == nil {
		err = t.Execute(io.Discard, &client.Lease{})
	}
	if err != nil {
		return nil, fmt.Errorf("the template %s does not render a lease: %w", in, err)
	}
	return &leaseTemplate{in: in, out: out, tmpl: t}, nil
}

// leaseFiles are the files a lease goes to: output, the JSON that sy dynamic lease create
// --output writes, and the rendered templates. Each is written atomically with mode 0600.
type leaseFiles struct {
	output    string
	templates []*leaseTemplate
}

func (f leaseFiles) paths() []string {
	var paths []string
	if f.output != "" {
		paths = append(paths, f.output)
	}
	for _, t := range f.templates {
		paths = append(paths, t.out)
	}
	return paths
}

// check fails when one of the files cannot be written, so that this is known before any
// lease is asked for.
func (f leaseFiles) check() error {
	for _, p := range f.paths() {
		af, err := createAtomic(p)
		if err != nil {
			return err
		}
		af.abort()
	}
	return nil
}

// write writes every file for l: all are rendered, and their temporary files written
// and flushed to disk, before any is renamed into place, so that a file that cannot be
// written (a missing directory, a full disk) leaves every file as it was and none names
// a lease the caller then revokes. Whatever fails, each file holds either what it held
// before or all of its new content.
func (f leaseFiles) write(l *client.Lease) error {
	type pending struct {
		file *atomicFile
		data []byte
	}
	var all []pending
	defer func() {
		for _, p := range all {
			p.file.abort()
		}
	}()
	add := func(path string, data []byte) error {
		af, err := createAtomic(path)
		if err != nil {
			return err
		}
		all = append(all, pending{af, data})
		return nil
	}
	if f.output != "" {
		data, err := marshalJSON(l)
		if err != nil {
			return err
		}
		if err := add(f.output, data); err != nil {
			return err
		}
	}
	for _, t := range f.templates {
		var buf bytes.Buffer
		if err := t.tmpl.Execute(&buf, l); err != nil {
			return fmt.Errorf("rendering the template %s: %w", t.in, err)
		}
		if err := add(t.out, buf.Bytes()); err != nil {
			return err
		}
	}
	for _, p := range all {
		if err := p.file.stage(p.data); err != nil {
			return err
		}
	}
	for _, p := range all {
		if err := p.file.place(); err != nil {
			return err
		}
	}
	return nil
}
