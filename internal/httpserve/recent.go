package httpserve

import (
	"sync"
	"time"
)

// Pull is one manifest request, for the status page.
type Pull struct {
	Time   time.Time
	Repo   string
	Ref    string
	Status int
	Cache  string
	// Reason is what an error answer said (a signature denial names its
	// rule and why); empty for a success.
	Reason string
}

// recentPulls keeps the last manifest requests.
type recentPulls struct {
	mu   sync.Mutex
	ring [recentMax]Pull
	n    int // requests seen
}

const recentMax = 20

func (r *recentPulls) add(p Pull) {
	r.mu.Lock()
	r.ring[r.n%recentMax] = p
	r.n++
	r.mu.Unlock()
}

// RecentPulls returns the last manifest requests, newest first.
func (s *Server) RecentPulls() []Pull {
	r := &s.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	k := min(r.n, recentMax)
	out := make([]Pull, 0, k)
	for i := 1; i <= k; i++ {
		out = append(out, r.ring[(r.n-i)%recentMax])
	}
	return out
}
