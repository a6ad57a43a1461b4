package baseline

import (
	"errors"
	"io"
	"sync/atomic"

	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NetworkServer is a native Go envoy.service.network_ext_proc.v3
// NetworkExternalProcessor with exactly the behaviour of the
// plugins/tcp-count proxy-wasm network filter, the L4 benchmark baseline:
//
//   - every frame is answered at once, in order, with its own direction's
//     Data carrying the same bytes and end_of_stream, UNMODIFIED (an echo
//     server, the shape of GCP's network callout examples);
//   - each connection (Process stream) is counted once, and the bytes of
//     every frame are added to its direction's counter;
//   - a frame setting both or neither of read_data and write_data ends the
//     stream with InvalidArgument; the end of the stream (EOF or
//     cancellation, Envoy's reset) is normal.
type NetworkServer struct {
	netprocv3.UnimplementedNetworkExternalProcessorServer

	connections, downstream, upstream atomic.Uint64
}

// NewNetworkServer returns a NetworkServer with zero counts.
func NewNetworkServer() *NetworkServer { return &NetworkServer{} }

// Register registers s on g.
func (s *NetworkServer) Register(g *grpc.Server) {
	netprocv3.RegisterNetworkExternalProcessorServer(g, s)
}

// Counts returns the connections seen and the bytes counted per direction
// (downstream: read_data, from the client; upstream: write_data).
func (s *NetworkServer) Counts() (connections, downstream, upstream uint64) {
	return s.connections.Load(), s.downstream.Load(), s.upstream.Load()
}

// Process implements netprocv3.NetworkExternalProcessorServer.
func (s *NetworkServer) Process(stream netprocv3.NetworkExternalProcessor_ProcessServer) error {
	for first := true; ; first = false {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		rd, wd := req.GetReadData(), req.GetWriteData()
		if (rd == nil) == (wd == nil) {
			return status.Error(codes.InvalidArgument, "ProcessingRequest must set exactly one of read_data and write_data")
		}
		if first {
			s.connections.Add(1)
		}
		resp := &netprocv3.ProcessingResponse{DataProcessingStatus: netprocv3.ProcessingResponse_UNMODIFIED}
		if rd != nil {
			s.downstream.Add(uint64(len(rd.GetData())))
			resp.ReadData = rd
		} else {
			s.upstream.Add(uint64(len(wd.GetData())))
			resp.WriteData = wd
		}
		if err := stream.Send(resp); err != nil {
			return nil // the client went away
		}
	}
}
