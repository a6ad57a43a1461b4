package server

import (
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/wasm-callout/wasm-callout/host"
)

// gRPC transport limits for an ext_proc server (see GRPCServerOptions).
const (
	// MaxMessageSize bounds one ProcessingRequest or ProcessingResponse.
	// A BUFFERED body arrives in a single message, so the 4 MiB gRPC
	// default would refuse bodies Envoy accepts; 64 MiB leaves room for
	// 16 MiB bodies with headroom.
	MaxMessageSize = 64 << 20
	// KeepaliveMinTime is the shortest client keepalive ping interval
	// accepted; grpc-go's default (5 min) answers Envoy clusters that ping
	// more often with GOAWAY too_many_pings.
	KeepaliveMinTime = 10 * time.Second
)

// ServiceName is the fully qualified name of the ext_proc service, as the
// gRPC health service knows it.
const ServiceName = "envoy.service.ext_proc.v3.ExternalProcessor"

// StreamWorkers is how many goroutines each gRPC server keeps to run
// streams on (grpc.NumStreamWorkers).
const StreamWorkers = 256

// GRPCServerOptions returns the grpc.ServerOptions an ext_proc server
// needs: message size limits that fit buffered bodies, l's concurrent-stream
// limit per connection (Limits.MaxStreamsPerConnection; the zero Limits
// means the defaults), reused stream workers and permissive keepalive
// enforcement. Add credentials as needed.
func GRPCServerOptions(l Limits) []grpc.ServerOption {
	perConn := uint32(math.MaxUint32)
	if n := l.withDefaults().MaxStreamsPerConnection; n > 0 {
		perConn = uint32(n)
	}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.MaxConcurrentStreams(perConn),
		// Reuse handler goroutines: a fresh goroutine per stream grows its
		// stack again on the way into wazero, which cost a tenth of the
		// server's CPU in BenchmarkProcess profiles. A stream holds its
		// worker for its whole life (a request's round trips, not one
		// message), so the pool is sized by streams in flight, not by
		// cores; grpc-go falls back to a new goroutine when every worker
		// is busy. See RATIONALE.md ("Stream workers").
		grpc.NumStreamWorkers(StreamWorkers),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
	}
}

// Options configure a Server. Plugin or Plugins is required.
type Options struct {
	// Plugin runs every stream until Swap replaces it (generation 1). Its
	// failure policy and fail status (host.Config) also apply when no
	// instance is available.
	Plugin *host.Plugin
	// Plugins are several named plugins (host.Config.Name, unique), run
	// in the chains that Chains names (see chains.go); each keeps its own
	// failure policy and swaps on its own (SwapPlugin). Set Plugin or
	// Plugins, not both.
	Plugins []*host.Plugin
	// Chains names the chains of Plugins. Without it, a single plugin is
	// the chain DefaultChain.
	Chains Chains
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger

	// DisableModeOverride stops the server from asking Envoy, in the first
	// headers response, to send the bodies the plugin wants: when the
	// plugin exports proxy_on_request_body or proxy_on_response_body and
	// protocol_config says that direction's body mode is NONE, the server
	// sets mode_override with that body mode BUFFERED. Envoy honours it
	// only with allow_mode_override: true (and allowed_override_modes, if
	// set, listing the resulting mode); otherwise it is ignored.
	DisableModeOverride bool

	// MetadataNamespace is the dynamic_metadata namespace of the plugin's
	// proxy_set_property writes; empty means DefaultMetadataNamespace.
	MetadataNamespace string

	// Client is the kind of ext_proc client, which decides how header
	// changes are encoded; ClientAuto (the zero value) tells per stream.
	Client Client

	// MutationRules must match the Envoy filter's mutation_rules; the
	// zero value is Envoy's default.
	MutationRules MutationRules

	// CloseStatus is the HTTP status of the immediate response that stands
	// for the plugin's proxy_close_stream (ext_proc cannot reset the
	// downstream stream); 0 means 503.
	CloseStatus uint32

	// MessageTimeout is the Envoy filter's message_timeout (0 means
	// Envoy's default, 200 ms) and MaxMessageTimeout its
	// max_message_timeout. When a withheld answer waits on the plugin's
	// outbound call and the call may outlast MessageTimeout, the server
	// sends override_message_timeout, capped at MaxMessageTimeout. Zero
	// MaxMessageTimeout (Envoy's default, which disables overrides) never
	// sends one.
	MessageTimeout, MaxMessageTimeout time.Duration

	// HealthInterval is how often the gRPC health status follows the
	// plugin's pool; 0 means one second.
	HealthInterval time.Duration

	// DrainTimeout bounds how long a plugin generation replaced by Swap
	// keeps serving the streams that started on it; the streams still open
	// then get its failure policy, and it closes. 0 means
	// DefaultDrainTimeout.
	DrainTimeout time.Duration

	// Limits bound what clients can make the server hold (see Limits).
	Limits Limits
}

// Stats count what the server has done since it started.
type Stats struct {
	StreamsStarted int64 // Process calls, both services
	StreamsActive  int64 // Process calls running now
	// ProtocolErrors counts streams ended with InvalidArgument or
	// FailedPrecondition because of a malformed or out-of-order message.
	ProtocolErrors     int64
	MessagesReceived   int64
	ResponsesSent      int64
	ImmediateResponses int64 // local responses sent (plugin, failure or close)
	// PluginFailures counts streams whose plugin failed (trap, timeout,
	// memory) or had no healthy instance.
	PluginFailures int64
	// DroppedMutations counts header changes not sent because Envoy would
	// reject or ignore them, or because they could no longer be delivered
	// (made after Envoy forwarded the headers); Dropped splits it by
	// reason (index: DropReason).
	DroppedMutations int64
	Dropped          [NumDropReasons]int64
	// DuplicateEOS counts FULL_DUPLEX_STREAMED body messages ignored
	// because they repeated an end of stream (envoyproxy/envoy#46237).
	DuplicateEOS int64
	// LostBodyBytes counts body bytes the plugin held (paused) in STREAMED
	// mode that ext_proc could not deliver.
	LostBodyBytes int64
	// TimeoutOverrides counts override_message_timeout messages sent
	// while a plugin's outbound call was out.
	TimeoutOverrides int64
	// LimitRefusals counts streams ended by a limit (Limits): too many
	// streams, too many bytes or messages held, or idle too long.
	LimitRefusals int64
	// Shed counts the streams among LimitRefusals refused because every
	// plugin instance was overloaded (host.Config.ShedQueueDelay).
	Shed int64
	// BufferedBytes is what streams hold now across messages for their
	// plugins (what Limits.MaxBufferTotal caps).
	BufferedBytes int64

	// Services has the stream counts of each service (index: Service);
	// the totals above add them up. Messages counts messages received by
	// phase (index: Phase).
	Services [NumServices]ServiceStats
	Messages [NumPhases]int64

	// Generation is the primary plugin's generation new streams start on:
	// 1 for Options.Plugin, one more per Swap. Swaps, ReloadFailures,
	// DrainingGenerations and DrainExpired count every plugin's.
	Generation uint64
	// Swaps counts switches to a new generation. ReloadFailures counts
	// Reload calls whose new generation failed to prepare, leaving the
	// current one serving.
	Swaps, ReloadFailures int64
	// DrainingGenerations counts replaced generations not yet closed.
	DrainingGenerations int64
	// DrainExpired counts streams given the failure policy because the
	// drain timeout of the generation they started on ran out.
	DrainExpired int64
}

type counters struct {
	responsesSent, immediate     atomic.Int64
	pluginFailures, duplicateEOS atomic.Int64
	lostBodyBytes, limitRefusals atomic.Int64
	shed                         atomic.Int64
	open                         atomic.Int64 // streams of both services, for MaxStreams
	svc                          [NumServices]serviceCounters
	messages                     [NumPhases]atomic.Int64
	dropped                      [NumDropReasons]atomic.Int64
	latency                      [NumPhases]host.Histogram
}

// Server is the ext_proc service: every Process stream runs through one
// host.HTTPStream of the plugin. It also serves the gRPC health service
// and reflection (see Register). It is safe for concurrent use.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	opts   Options
	log    *slog.Logger
	health *health.Server

	// table holds the plugins, their current generations and the chains
	// (chains.go); gens the bookkeeping of swaps (generations.go).
	table  atomic.Pointer[pluginTable]
	gens   genState
	expiry expiry
	// chainCounts counts streams per chain name across tables (Apply
	// builds new chainDefs; the counts go on). unknownChain counts streams
	// that named no chain of the table.
	chainCountsMu sync.Mutex
	chainCounts   map[string]*atomic.Int64
	unknownChain  atomic.Int64

	draining atomic.Bool
	stats    counters
	// buffered is what every stream holds across messages (Limits).
	buffered atomic.Int64

	stopOnce sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup
}

// New returns a Server for opts. It starts a goroutine that keeps the
// health status current; Close stops it.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	table, err := newTable(opts, opts.Logger)
	if err != nil {
		return nil, err
	}
	if opts.MetadataNamespace == "" {
		opts.MetadataNamespace = DefaultMetadataNamespace
	}
	if opts.CloseStatus == 0 {
		opts.CloseStatus = 503
	}
	if opts.MessageTimeout <= 0 {
		opts.MessageTimeout = 200 * time.Millisecond
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	opts.Limits = opts.Limits.withDefaults()
	s := &Server{
		opts:   opts,
		log:    opts.Logger,
		health: health.NewServer(),
		stop:   make(chan struct{}),
	}
	s.countChains(table)
	s.table.Store(table)
	s.updateHealth()
	s.wg.Add(1)
	go s.watchHealth()
	return s, nil
}

// Register adds the ext_proc service, the network_ext_proc service
// (NetworkProcessor), the gRPC health service (answering for "",
// ServiceName and NetworkServiceName) and server reflection to g.
func (s *Server) Register(g *grpc.Server) {
	extprocv3.RegisterExternalProcessorServer(g, s)
	netprocv3.RegisterNetworkExternalProcessorServer(g, s.NetworkProcessor())
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
}

// acquire returns the plugin a new stream runs on for its whole life, and a
// release to call when the stream ends. Every stream, HTTP or TCP, gets its
// plugin here, so that swapping plugins can let in-flight streams finish
// on the generation they started on. release is idempotent. A stream that
// can stop using its plugin when the drain timeout runs out should use
// acquireLease instead, and watch its expired channel.
func (s *Server) acquire() (*host.Plugin, func()) {
	l := s.acquireLease()
	return l.gen.plugin, l.release
}

// Ready reports whether the server should receive traffic: it is live, not
// draining, and every current plugin has a healthy instance. It never
// waits for a plugin call.
func (s *Server) Ready() bool {
	if s.draining.Load() {
		return false
	}
	for _, p := range s.Plugins() {
		if st := p.Stats(); st.Healthy == 0 || st.Stalled > 0 {
			return false
		}
	}
	return true
}

// Live reports whether the server can still make progress: no instance of
// a current plugin is stuck in a call that its deadline could not stop
// (host.Stats.Stalled). Only a plugin run with deadlines off can get there;
// a liveness probe should then restart the process. It never waits for a
// plugin call.
func (s *Server) Live() bool {
	for _, p := range s.Plugins() {
		if p.Stats().Stalled > 0 {
			return false
		}
	}
	return true
}

// Drain marks the server not ready (HTTP readiness and gRPC health answer
// NOT_SERVING from now on) before a graceful stop. Streams keep running.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.health.Shutdown()
}

// Close stops the health goroutine, marks the server not serving and
// closes the plugin generations replaced by Swap, giving the streams still
// on them the failure policy. It does not stop gRPC servers or close the
// current plugin (Plugin); their owner does.
func (s *Server) Close() {
	s.Drain()
	s.closeGenerations()
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		ResponsesSent:      c.responsesSent.Load(),
		ImmediateResponses: c.immediate.Load(),
		PluginFailures:     c.pluginFailures.Load(),
		DuplicateEOS:       c.duplicateEOS.Load(),
		LostBodyBytes:      c.lostBodyBytes.Load(),
		LimitRefusals:      c.limitRefusals.Load(),
		Shed:               c.shed.Load(),
		BufferedBytes:      s.buffered.Load(),

		Generation:          s.Generation().ID,
		Swaps:               s.gens.swaps.Load(),
		ReloadFailures:      s.gens.reloadFailures.Load(),
		DrainingGenerations: s.gens.draining.Load(),
		DrainExpired:        s.gens.expiredStreams.Load(),
	}
	for i := range c.svc {
		sv := c.svc[i].stats()
		st.Services[i] = sv
		st.StreamsStarted += sv.StreamsStarted
		st.StreamsActive += sv.StreamsActive
		st.ProtocolErrors += sv.Finished[OutcomeProtocolError]
		st.TimeoutOverrides += sv.TimeoutOverrides
	}
	for i := range c.messages {
		st.Messages[i] = c.messages[i].Load()
		st.MessagesReceived += st.Messages[i]
	}
	for i := range c.dropped {
		st.Dropped[i] = c.dropped[i].Load()
		st.DroppedMutations += st.Dropped[i]
	}
	return st
}

func (s *Server) watchHealth() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.updateHealth()
		}
	}
}

// updateHealth publishes Ready as the gRPC health status. After Drain the
// health server ignores updates and stays NOT_SERVING.
func (s *Server) updateHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if s.Ready() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(ServiceName, st)
	s.health.SetServingStatus(NetworkServiceName, st)
}
