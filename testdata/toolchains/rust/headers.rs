//! headers: adds, replaces and removes request headers and adds a response
//! header.
mod proxy_wasm;
use proxy_wasm::*;

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _headers: u32, _end_of_stream: u32) -> u32 {
    add_header(REQUEST_HEADERS, "x-compat-toolchain", b"rust");
    replace_header(REQUEST_HEADERS, "x-compat-replace", b"rust");
    remove_header(REQUEST_HEADERS, "x-compat-remove");
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_ctx: u32, _headers: u32, _end_of_stream: u32) -> u32 {
    add_header(RESPONSE_HEADERS, "x-compat-response", b"rust");
    CONTINUE
}
