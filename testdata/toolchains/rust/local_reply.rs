//! local_reply: answers requests whose path starts with /deny with a 403
//! local response that carries a header and a body; lets others through.
mod proxy_wasm;
use proxy_wasm::*;

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _headers: u32, _end_of_stream: u32) -> u32 {
    match header(REQUEST_HEADERS, ":path") {
        Some(path) if path.starts_with(b"/deny") => {
            send_local_response(403, "compat_denied", b"denied by rust\n", &[("x-compat-denied", "rust")]);
            PAUSE
        }
        _ => CONTINUE,
    }
}
