//! body: buffers each body to its end, then upper-cases the request body
//! (replacing it whole) and prepends "[rust] " to the response body.
mod proxy_wasm;
use proxy_wasm::*;

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_ctx: u32, size: u32, end_of_stream: u32) -> u32 {
    if end_of_stream == 0 {
        return PAUSE; // buffer until the whole body is here
    }
    if let Some(mut data) = buffer(REQUEST_BODY, 0, size as usize) {
        data.make_ascii_uppercase();
        if set_buffer(REQUEST_BODY, 0, data.len(), &data) != OK {
            log(LOG_ERROR, "rust body: replacing the request body failed");
        }
    }
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_ctx: u32, _size: u32, end_of_stream: u32) -> u32 {
    if end_of_stream == 0 {
        return PAUSE;
    }
    if set_buffer(RESPONSE_BODY, 0, 0, b"[rust] ") != OK {
        log(LOG_ERROR, "rust body: prepending to the response body failed");
    }
    CONTINUE
}
