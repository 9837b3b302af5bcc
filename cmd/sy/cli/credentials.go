package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/syvault/syvault/http/client"
)

// Environment variables sy reads.
const (
	EnvServer          = "SY_SERVER"
	EnvClientID        = "SY_CLIENT_ID"
	EnvPrivateKey      = "SY_PRIVATE_KEY"
	EnvPrivateKeyFile  = "SY_PRIVATE_KEY_FILE"
	EnvCredentialsFile = "SY_CREDENTIALS_FILE"
)

// credentialFlags are the global flags naming the client's credentials.
type credentialFlags struct {
	server          string
	clientID        string
	privateKeyFile  string
	credentialsFile string

	// clientIDShadowed is set by commands whose own --client-id flag is a filter, not the
	// credential, so that messages do not point at it.
	clientIDShadowed bool
}

// credentials are a client's resolved credentials; the sources name where each came from,
// for error messages.
type credentials struct {
	Server     string
	ClientID   string
	PrivateKey string // PKCS#8 PEM

	serverSource string
	keySource    string
}

// credentialsFile is the JSON the server writes for its first admin client
// (admin-client.json).
type credentialsFile struct {
	Server     string `json:"server"`
	ClientID   string `json:"client_id"`
	PrivateKey string `json:"private_key"`
}

// resolveCredentials picks each credential from, in order: its flag, its environment
// variable, then the credentials file (--credentials-file or SY_CREDENTIALS_FILE). For the
// private key: --private-key-file, SY_PRIVATE_KEY, SY_PRIVATE_KEY_FILE, then the file.
// It fails with one sentence naming everything that is missing or unreadable; the key is
// parsed, so a wrong key fails here, naming its source.
func resolveCredentials(f credentialFlags, getenv func(string) string) (credentials, error) {
	var file credentialsFile
	fileName, fileSource := pick(f.credentialsFile, "--credentials-file", getenv(EnvCredentialsFile), EnvCredentialsFile)
	if fileName != "" {
		data, err := os.ReadFile(fileName)
		if err != nil {
			return credentials{}, fmt.Errorf("reading the credentials file %s (%s): %w; the server writes it as DATA_DIR/%s (syvault serve --dev, syvault init)",
				fileName, fileSource, pathErrCause(err), adminClientFile)
		}
		if err := json.Unmarshal(data, &file); err != nil {
			return credentials{}, fmt.Errorf("the credentials file %s is not JSON with server, client_id and private_key: %w", fileName, err)
		}
	}

	var c credentials
	c.Server, c.serverSource = pick(f.server, "--server", getenv(EnvServer), EnvServer, file.Server, fileName)
	c.ClientID, _ = pick(f.clientID, "--client-id", getenv(EnvClientID), EnvClientID, file.ClientID, fileName)
	switch {
	case f.privateKeyFile != "":
		key, err := readKeyFile(f.privateKeyFile, "--private-key-file")
		if err != nil {
			return credentials{}, err
		}
		c.PrivateKey, c.keySource = key, "--private-key-file "+f.privateKeyFile
	case getenv(EnvPrivateKey) != "":
		c.PrivateKey, c.keySource = unescapeNewlines(getenv(EnvPrivateKey)), EnvPrivateKey
	case getenv(EnvPrivateKeyFile) != "":
		key, err := readKeyFile(getenv(EnvPrivateKeyFile), EnvPrivateKeyFile)
		if err != nil {
			return credentials{}, err
		}
		c.PrivateKey, c.keySource = key, EnvPrivateKeyFile+" "+getenv(EnvPrivateKeyFile)
	case file.PrivateKey != "":
		c.PrivateKey, c.keySource = file.PrivateKey, fileName
	}

	var missing []string
	if c.Server == "" {
		missing = append(missing, EnvServer+" (or --server)")
	}
	if c.ClientID == "" {
		if f.clientIDShadowed {
			missing = append(missing, EnvClientID+" (--client-id is a filter here)")
		} else {
			missing = append(missing, EnvClientID+" (or --client-id)")
		}
	}
	if c.PrivateKey == "" {
		missing = append(missing, EnvPrivateKey+" or "+EnvPrivateKeyFile+" (or --private-key-file)")
	}
	if len(missing) > 0 {
		return credentials{}, fmt.Errorf("missing credentials: set %s, or point %s (or --credentials-file) at a JSON credentials file",
			joinAnd(missing), EnvCredentialsFile)
	}

	if u, err := url.Parse(c.Server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return credentials{}, fmt.Errorf("the server URL from %s must look like https://vault.example.com, got %q", c.serverSource, c.Server)
	}
	if _, err := client.ParsePrivateKey(c.PrivateKey); err != nil {
		var asFile credentialsFile
		if json.Unmarshal([]byte(c.PrivateKey), &asFile) == nil && asFile.PrivateKey != "" {
			return credentials{}, fmt.Errorf("the private key from %s is a JSON credentials file, not a key: pass that file with --credentials-file (or %s)",
				c.keySource, EnvCredentialsFile)
		}
		return credentials{}, fmt.Errorf("the private key from %s is not usable: %w; sy keygen --out client.pem makes a key pair (register client.pub.pem with sy client create)",
			c.keySource, err)
	}
	return c, nil
}

// pick returns the first non-empty value of (value, source) pairs.
func pick(pairs ...string) (value, source string) {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] != "" {
			return pairs[i], pairs[i+1]
		}
	}
	return "", ""
}

// readKeyFile reads the private key file name, given by source (a flag or variable).
func readKeyFile(name, source string) (string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("reading the private key file %s (%s): %w; sy keygen --out client.pem makes a key pair", name, source, pathErrCause(err))
	}
	return string(data), nil
}

// adminClientFile is the credentials file the server writes for its first admin client.
const adminClientFile = "admin-client.json"

// unescapeNewlines accepts a PEM pasted into one line with literal \n sequences, as
// happens with environment variables set from some secret stores.
func unescapeNewlines(pemText string) string {
	if !strings.Contains(pemText, "\n") && strings.Contains(pemText, `\n`) {
		return strings.ReplaceAll(pemText, `\n`, "\n")
	}
	return pemText
}

func joinAnd(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// newClient resolves the credentials and returns a client for them.
func (a *app) newClient() (*client.Client, error) {
	creds, err := resolveCredentials(a.flags, a.getenv)
	if err != nil {
		return nil, err
	}
	a.server, a.serverSource = creds.Server, creds.serverSource
	c, err := client.New(creds.Server, creds.ClientID, creds.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("creating the client: %w", err)
	}
	return c, nil
}
