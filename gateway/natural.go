package gateway

import "sync"

// RunBatches starts workers that each take the first item to arrive on in
// together with every item already waiting behind it (at most max) and
// hand them to do, until quit is closed. This is natural batching: an item
// that finds a worker idle goes at once, alone; items that arrive while
// every worker is busy share the next trip. Nothing waits for company.
// Wait on the returned group after closing quit.
func RunBatches[T any](in <-chan T, quit <-chan struct{}, workers, max int, do func([]T)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-quit:
					return
				case first := <-in:
					do(gather(in, first, max))
				}
			}
		})
	}
	return &wg
}

func gather[T any](in <-chan T, first T, max int) []T {
	items := []T{first}
	for len(items) < max {
		select {
		case it := <-in:
			items = append(items, it)
		default:
			return items
		}
	}
	return items
}
