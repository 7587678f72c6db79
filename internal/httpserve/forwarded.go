package httpserve

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientAddr returns the address of the client behind trusted proxies: for
// a request whose peer is in trusted, the right-most address of
// X-Forwarded-For that is not itself a trusted proxy (each proxy appends
// the address it received the request from, so addresses to its left are
// the client's word and cannot be trusted). Otherwise, or when the header
// gives nothing usable, the peer's address. The result is "host:port" with
// port 0 when it comes from the header.
func clientAddr(r *http.Request, trusted []netip.Prefix) string {
	if len(trusted) == 0 {
		return r.RemoteAddr
	}
	peer, ok := parseHost(r.RemoteAddr)
	if !ok || !inAny(trusted, peer) {
		return r.RemoteAddr
	}
	hops := r.Header.Values("X-Forwarded-For")
	var addrs []string
	for _, h := range hops {
		for a := range strings.SplitSeq(h, ",") {
			addrs = append(addrs, strings.TrimSpace(a))
		}
	}
	for i := len(addrs) - 1; i >= 0; i-- {
		ip, err := netip.ParseAddr(addrs[i])
		if err != nil {
			return r.RemoteAddr // a malformed hop: trust nothing further left
		}
		ip = ip.Unmap()
		if !inAny(trusted, ip) {
			return net.JoinHostPort(ip.String(), "0")
		}
	}
	return r.RemoteAddr
}

func parseHost(hostport string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

func inAny(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
