package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// financeLog counts a soak's finance reads by what they asked and how
// they were answered.
type financeLog struct {
	mu      sync.Mutex
	answers map[string]int // "payments page 200", "payments csv 200", …
	bad     int            // answers other than 200, and reads that got none
	example string         // the first bad one
}

func newFinanceLog() *financeLog { return &financeLog{answers: map[string]int{}} }

func (f *financeLog) add(what string, status int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	label := fmt.Sprintf("%s %d", what, status)
	if err != nil {
		label = what + " error"
	}
	f.answers[label]++
	if status != http.StatusOK || err != nil {
		f.bad++
		if f.example == "" {
			f.example = fmt.Sprintf("%s: status %d, %v", what, status, err)
		}
	}
}

func (f *financeLog) failed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bad
}

func (f *financeLog) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(f.answers)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, f.answers[k]))
	}
	out := strings.Join(parts, ", ")
	if f.example != "" {
		out += "; first failure: " + f.example
	}
	return out
}

// csvEvery: one CSV export (the last minute's payments) every this many
// seconds of reads, the first after 5 s, so even a short soak makes one.
const csvEvery = 30

// financeReads reads the ledger as a finance client does, once a second
// until ctx ends: the newest page of paid orders and the one after it
// (its cursor), a page of refunds and one of notifications, and every
// csvEvery seconds a CSV export of the last minute's payments, so an
// export stays the same size however long the soak runs.
func financeReads(ctx context.Context, w *world, log *financeLog) {
	c := &http.Client{Timeout: 30 * time.Second}
	defer c.CloseIdleConnections() // not to be counted in the quiet sample (see RunSoak)
	key := w.id.APIKeys["finance"]
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cursor := financeGet(ctx, c, w, key, log, "payments page", "/v1/ledger/payments?state=SUCCESS&limit=100")
		if cursor != "" {
			financeGet(ctx, c, w, key, log, "payments next page", "/v1/ledger/payments?state=SUCCESS&limit=100&cursor="+
				url.QueryEscape(cursor))
		}
		financeGet(ctx, c, w, key, log, "refunds page", "/v1/ledger/refunds?limit=50")
		financeGet(ctx, c, w, key, log, "notifications page", "/v1/ledger/notifications?limit=50")
		if i%csvEvery == 5 {
			from := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
			financeGet(ctx, c, w, key, log, "payments csv", "/v1/ledger/payments?format=csv&from="+url.QueryEscape(from))
		}
	}
}

// financeGet reads path with the finance key, logs the answer and
// returns a JSON page's next_cursor. A read cut short by the end of the
// soak is not logged.
func financeGet(ctx context.Context, c *http.Client, w *world, key string, log *financeLog, what, path string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.gw.URL()+path, nil)
	if err != nil {
		log.add(what, 0, err)
		return ""
	}
	req.Header.Set("X-Api-Key", key)
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			log.add(what, 0, err)
		}
		return ""
	}
	defer resp.Body.Close()
	var page struct {
		NextCursor string `json:"next_cursor"`
	}
	if resp.StatusCode != http.StatusOK || strings.HasSuffix(what, "csv") {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 256<<20))
	} else {
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&page)
	}
	if ctx.Err() == nil {
		log.add(what, resp.StatusCode, err)
	}
	return page.NextCursor
}
