// grpc: calls the SDK's own gRPC imports, whose signatures predate
// initial metadata (proxy_grpc_call takes 10 parameters, proxy_grpc_stream
// 7), and reports their statuses in request headers. With no upstreams
// configured the host answers as Envoy does for an unknown cluster.
export * from "@solo-io/proxy-runtime/proxy";
import { RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context } from "@solo-io/proxy-runtime";
import * as imports from "@solo-io/proxy-runtime/imports";

class GrpcRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Grpc(context_id, this);
  }
}

class Grpc extends Context {
  constructor(context_id: u32, root_context: GrpcRoot) {
    super(context_id, root_context);
  }
  onRequestHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    let service = String.UTF8.encode("grpc_cluster");
    let name = String.UTF8.encode("compat.Echo");
    let method = String.UTF8.encode("Say");
    let message = String.UTF8.encode("hi");
    let token = new ArrayBuffer(4);
    let call = imports.proxy_grpc_call(changetype<usize>(service), service.byteLength, changetype<usize>(name), name.byteLength,
      changetype<usize>(method), method.byteLength, changetype<usize>(message), message.byteLength, 1000, changetype<usize>(token));
    let stream = imports.proxy_grpc_stream(changetype<usize>(service), service.byteLength, changetype<usize>(name), name.byteLength,
      changetype<usize>(method), method.byteLength, changetype<usize>(token));
    stream_context.headers.request.add("x-compat-grpc-call", call.toString());
    stream_context.headers.request.add("x-compat-grpc-stream", stream.toString());
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new GrpcRoot(context_id); }, "compat");
