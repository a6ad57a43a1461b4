// body: buffers each body to its end, then upper-cases the request body
// (replacing it whole) and prepends "[assemblyscript] " to the response
// body. proxy-runtime 0.1.8 can read bodies but has no setter (its
// imports.ts declares proxy_set_buffer_status, bound to the wrong host
// name), so the plugin declares proxy_set_buffer_bytes itself, as users of
// that release had to.
export * from "@solo-io/proxy-runtime/proxy";
import { RootContext, Context, registerRootContext, FilterDataStatusValues, log, LogLevelValues } from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues, WasmResultValues } from "@solo-io/proxy-runtime/runtime";

// @ts-ignore: decorator
@external("env", "proxy_set_buffer_bytes")
declare function proxy_set_buffer_bytes(typ: i32, start: u32, length: u32, data: usize, size: usize): u32;

function setBody(typ: BufferTypeValues, start: u32, length: u32, data: ArrayBuffer): void {
  if (proxy_set_buffer_bytes(typ, start, length, changetype<usize>(data), data.byteLength) != WasmResultValues.Ok) {
    log(LogLevelValues.error, "assemblyscript body: setting the body failed");
  }
}

class BodyRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Body(context_id, this);
  }
}

class Body extends Context {
  constructor(context_id: u32, root_context: BodyRoot) {
    super(context_id, root_context);
  }
  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!end_of_stream) {
      return FilterDataStatusValues.StopIterationAndBuffer;
    }
    let body = String.UTF8.decode(get_buffer_bytes(BufferTypeValues.HttpRequestBody, 0, body_buffer_length as u32));
    let upper = String.UTF8.encode(body.toUpperCase());
    setBody(BufferTypeValues.HttpRequestBody, 0, upper.byteLength, upper);
    return FilterDataStatusValues.Continue;
  }
  onResponseBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!end_of_stream) {
      return FilterDataStatusValues.StopIterationAndBuffer;
    }
    setBody(BufferTypeValues.HttpResponseBody, 0, 0, String.UTF8.encode("[assemblyscript] "));
    return FilterDataStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new BodyRoot(context_id); }, "compat");
