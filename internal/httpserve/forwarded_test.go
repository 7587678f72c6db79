package httpserve

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("::1/128")}
	tests := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy configured matters only with a header", "192.0.2.7:4000", nil, "192.0.2.7:4000"},
		{"untrusted peer: header ignored", "192.0.2.7:4000", []string{"198.51.100.1"}, "192.0.2.7:4000"},
		{"trusted peer: the appended address", "10.9.1.1:4000", []string{"198.51.100.1"}, "198.51.100.1:0"},
		{"trusted peer: what the client claimed is left of it", "10.9.1.1:4000", []string{"203.0.113.5, 198.51.100.1"}, "198.51.100.1:0"},
		{"a chain of trusted proxies is skipped", "10.9.1.1:4000", []string{"198.51.100.1, 10.9.2.2"}, "198.51.100.1:0"},
		{"several header lines are one list", "10.9.1.1:4000", []string{"203.0.113.5", "198.51.100.1"}, "198.51.100.1:0"},
		{"IPv6 peer and client", "[::1]:4000", []string{"2001:db8::7"}, "[2001:db8::7]:0"},
		{"IPv4-mapped client", "10.9.1.1:4000", []string{"::ffff:198.51.100.1"}, "198.51.100.1:0"},
		{"malformed hop: the peer", "10.9.1.1:4000", []string{"198.51.100.1, garbage"}, "10.9.1.1:4000"},
		{"only trusted hops: the peer", "10.9.1.1:4000", []string{"10.9.3.3"}, "10.9.1.1:4000"},
		{"no header: the peer", "10.9.1.1:4000", nil, "10.9.1.1:4000"},
	}
	for _, tt := range tests {
		r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := clientAddr(r, trusted); got != tt.want {
			t.Errorf("%s: clientAddr = %q, want %q", tt.name, got, tt.want)
		}
	}
	r := &http.Request{RemoteAddr: "10.9.1.1:4000", Header: http.Header{"X-Forwarded-For": {"198.51.100.1"}}}
	if got := clientAddr(r, nil); got != r.RemoteAddr {
		t.Errorf("no trusted proxies: clientAddr = %q, want the peer", got)
	}
}
