package http

import (
	"net/url"
	"testing"

	"github.com/syvault/syvault/events"
)

func TestConnectionString(t *testing.T) {
	for _, tt := range []struct {
		name     string
		engine   events.Engine
		host     string
		password string
		want     string
	}{
		{"postgresql", events.PostgreSQL, "db.example.com", "xK9#mP2$qR7wL4nB", "postgresql://vf_tmp_a8f3k2m9:xK9%23mP2$qR7wL4nB@db.example.com:5432/myapp"},
		{"mysql", events.MySQL, "127.0.0.1", "a", "mysql://vf_tmp_a8f3k2m9:a@127.0.0.1:5432/myapp"},
		{"ipv6 host", events.PostgreSQL, "::1", "a", "postgresql://vf_tmp_a8f3k2m9:a@[::1]:5432/myapp"},
		{"every symbol", events.PostgreSQL, "h", "#$%&*+-=?@^_~!/:?[]", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs := connectionString(tt.engine, tt.host, 5432, "myapp", "vf_tmp_a8f3k2m9", tt.password)
			if tt.want != "" && cs != tt.want {
				t.Fatalf("got  %s\nwant %s", cs, tt.want)
			}
			u, err := url.Parse(cs)
			if err != nil {
				t.Fatal(err)
			}
			if pw, _ := u.User.Password(); pw != tt.password || u.User.Username() != "vf_tmp_a8f3k2m9" || u.Path != "/myapp" {
				t.Fatalf("%s does not round-trip: %q", cs, pw)
			}
		})
	}
}
