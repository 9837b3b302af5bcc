package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Version is sy's version, set at build time with
// -ldflags "-X github.com/syvault/syvault/cmd/sy/cli.Version=v1.2.3"; without it, the
// module version from the build information, or "dev".
var Version = ""

func versionString() string {
	v := Version
	if v == "" {
		v = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("sy %s (%s %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print sy's version",
		Args:  exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(a.stdout, versionString())
			return err
		},
	}
}

func (a *app) authCommand() *cobra.Command {
	token := &cobra.Command{
		Use:   "token",
		Short: "Print an access token for the client (export SM_TOKEN=$(sy auth token))",
		Long: `Print an access token for the client, obtained with a signed client assertion from the
token endpoint, for use as "Authorization: Bearer <token>":

  export SM_TOKEN=$(sy auth token)`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.newClient()
			if err != nil {
				return err
			}
			tok, err := c.Token(cmd.Context())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.stdout, tok)
			return err
		},
	}
	return group("auth", "Authenticate with the server", token)
}

func (a *app) keygenCommand() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen --out client.pem",
		Short: "Write a new Ed25519 key pair for a client",
		Long: `Write a new Ed25519 key pair: the private key to --out (PKCS#8 PEM, mode 0600) and the
public key next to it with .pub.pem in place of .pem (PKIX PEM), e.g. client.pem and
client.pub.pem. Register the public key with the server; keep the private key secret.
Existing files are not overwritten unless --force is given.`,
		Args: exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			pubPath := publicKeyPath(out)
			if !force {
				for _, p := range []string{out, pubPath} {
					if _, err := os.Lstat(p); err == nil {
						return fmt.Errorf("%s exists; use --force to overwrite it", p)
					}
				}
			}
			privPEM, pubPEM, err := newKeyPair()
			if err != nil {
				return err
			}
			if err := writeAtomic(out, privPEM, 0o600); err != nil {
				return err
			}
			// The public key is not secret: readable like any public file. The mode is
			// set on the file before it is renamed into place, never by its path after:
			// in a directory others may write to, the path may name their symlink by then.
			if err := writeAtomic(pubPath, pubPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "private key written to %s (keep it secret), public key to %s\n", out, pubPath)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "private key file to write; the public key goes to the same name ending in .pub.pem")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	cmd.MarkFlagRequired("out")
	return cmd
}

// publicKeyPath is where keygen writes the public key for a private key file.
func publicKeyPath(privPath string) string {
	return strings.TrimSuffix(privPath, ".pem") + ".pub.pem"
}

// newKeyPair returns a fresh Ed25519 key pair as PKCS#8 and PKIX PEM.
func newKeyPair() (privPEM, pubPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil
}

// writeAtomic writes data to path atomically, the file having mode from the start.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := createAtomic(path)
	if err != nil {
		return err
	}
	defer f.abort()
	if mode != 0o600 {
		if err := f.tmp.Chmod(mode); err != nil {
			return fmt.Errorf("cannot write %s: %w", path, pathErrCause(err))
		}
	}
	return f.commit(data)
}
