// config: the SDK reads the plugin configuration in onConfigure; each
// request gets it in x-compat-config, is logged at info, and is counted in
// the counter compat_assemblyscript_requests. Built without
// --use abort=abort_proc_exit, so it imports env.abort instead of
// wasi_unstable.proc_exit.
export * from "@solo-io/proxy-runtime/proxy";
import { RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context, log, LogLevelValues, Counter } from "@solo-io/proxy-runtime";

class ConfigRoot extends RootContext {
  requests: Counter | null = null;
  createContext(context_id: u32): Context {
    return new Config(context_id, this);
  }
  onConfigure(configuration_size: u32): bool {
    let ok = super.onConfigure(configuration_size);
    this.requests = new Counter("compat_assemblyscript_requests");
    return ok;
  }
}

class Config extends Context {
  root: ConfigRoot;
  constructor(context_id: u32, root_context: ConfigRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }
  onRequestHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    let config = this.root.getConfiguration();
    stream_context.headers.request.add("x-compat-config", config);
    log(LogLevelValues.info, "assemblyscript config: request with configuration " + config);
    let requests = this.root.requests;
    if (requests !== null) {
      requests.increment(1);
    }
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new ConfigRoot(context_id); }, "compat");
