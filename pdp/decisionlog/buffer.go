package decisionlog

import "sync"

// buffer holds encoded events waiting for upload, oldest first, bounded in
// events and in bytes. Pushing past a bound evicts the oldest events (as
// OPA's buffers do) and reports how many, so every lost event is counted.
// It is safe for concurrent use.
type buffer struct {
	mu        sync.Mutex
	items     [][]byte
	bytes     int64
	maxEvents int   // 0: unbounded (never: Options.validate sets a bound)
	maxBytes  int64 // 0: unbounded in bytes
}

// push appends events and returns how many events were evicted to make
// room, including any single event larger than the byte bound.
func (b *buffer) push(evs ...[]byte) (dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range evs {
		if b.maxBytes > 0 && int64(len(e)) > b.maxBytes {
			dropped++
			continue
		}
		b.items = append(b.items, e)
		b.bytes += int64(len(e))
	}
	return dropped + b.trimLocked()
}

// pushFront puts events back in front (a failed upload), evicting the
// oldest when the bounds are exceeded.
func (b *buffer) pushFront(evs [][]byte) (dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	items := make([][]byte, 0, len(evs)+len(b.items))
	items = append(items, evs...)
	b.items = append(items, b.items...)
	for _, e := range evs {
		b.bytes += int64(len(e))
	}
	return b.trimLocked()
}

func (b *buffer) trimLocked() (dropped int) {
	for len(b.items) > 0 && ((b.maxEvents > 0 && len(b.items) > b.maxEvents) || (b.maxBytes > 0 && b.bytes > b.maxBytes)) {
		b.bytes -= int64(len(b.items[0]))
		b.items[0] = nil
		b.items = b.items[1:]
		dropped++
	}
	return dropped
}

// take removes and returns the oldest events whose JSON array fits in
// limit bytes (at least one event, if any is waiting).
func (b *buffer) take(limit int64) [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	size := int64(2) // "[" and "]"
	n := 0
	for n < len(b.items) {
		add := int64(len(b.items[n])) + 1 // the comma
		if n > 0 && size+add > limit {
			break
		}
		size += add
		n++
	}
	out := make([][]byte, n)
	copy(out, b.items[:n])
	for i := range n {
		b.bytes -= int64(len(b.items[i]))
		b.items[i] = nil
	}
	b.items = b.items[n:]
	if len(b.items) == 0 {
		b.items = nil // let the backing array go
	}
	return out
}

// len returns the number of events and bytes waiting.
func (b *buffer) len() (int, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.items), b.bytes
}

// drain removes everything and returns how many events that was.
func (b *buffer) drain() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.items)
	b.items, b.bytes = nil, 0
	return n
}
