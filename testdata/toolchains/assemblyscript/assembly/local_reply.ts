// local_reply: answers requests whose path starts with /deny with a 403
// local response that carries a header and a body; lets others through.
export * from "@solo-io/proxy-runtime/proxy";
import { RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context, send_local_response, HeaderPair, GrpcStatusValues } from "@solo-io/proxy-runtime";

class LocalReplyRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new LocalReply(context_id, this);
  }
}

class LocalReply extends Context {
  constructor(context_id: u32, root_context: LocalReplyRoot) {
    super(context_id, root_context);
  }
  onRequestHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (!stream_context.headers.request.get(":path").startsWith("/deny")) {
      return FilterHeadersStatusValues.Continue;
    }
    let headers = [new HeaderPair(String.UTF8.encode("x-compat-denied"), String.UTF8.encode("assemblyscript"))];
    send_local_response(403, "compat_denied", String.UTF8.encode("denied by assemblyscript\n"), headers, GrpcStatusValues.InvalidCode);
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32) => { return new LocalReplyRoot(context_id); }, "compat");
