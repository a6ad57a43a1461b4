package server

// This file holds the receive loop both services run beside each stream's
// handler, on goroutines reused across streams.

import (
	"sync/atomic"
	"time"
)

// received is what a stream's receive loop hands to its handler: a message
// or the error that ended receiving.
type received[M any] struct {
	msg M
	err error
}

// receive starts the stream's receive loop: it calls recv until it fails
// and hands each result to the returned channel, until done is closed.
//
// The handler cannot receive itself: grpc-go ends a server stream only when
// its handler returns, so a handler blocked in Recv could not end an idle
// stream, apply a drain timeout or answer a plugin's asynchronous event.
// The loop runs on a reused goroutine (recvWorker) rather than a fresh one,
// whose stack would grow again inside proto decoding on every stream.
func receive[M any](recv func() (M, error), done <-chan struct{}) <-chan received[M] {
	out := make(chan received[M])
	runRecv(func() {
		for {
			m, err := recv()
			select {
			case out <- received[M]{m, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	})
	return out
}

// Receive workers wait up to recvWorkerIdle for another stream, and at
// most maxIdleRecvWorkers of them wait at once; more are started when
// every one is busy.
const (
	maxIdleRecvWorkers = 256
	recvWorkerIdle     = time.Second
)

var (
	recvWork = make(chan func())
	recvIdle atomic.Int32
)

// runRecv runs loop on an idle receive worker, or a new one.
func runRecv(loop func()) {
	select {
	case recvWork <- loop:
	default:
		go recvWorker(loop)
	}
}

func recvWorker(loop func()) {
	t := time.NewTimer(recvWorkerIdle)
	defer t.Stop()
	for {
		loop()
		if recvIdle.Add(1) > maxIdleRecvWorkers {
			recvIdle.Add(-1)
			return
		}
		t.Reset(recvWorkerIdle)
		select {
		case loop = <-recvWork:
			recvIdle.Add(-1)
		case <-t.C:
			recvIdle.Add(-1)
			return
		}
	}
}
