//! tcp: a network filter that upper-cases the data the client sends and
//! prepends "[rust] " to the data the upstream answers.
mod proxy_wasm;
use proxy_wasm::*;

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_new_connection(_ctx: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_data(_ctx: u32, size: u32, _end_of_stream: u32) -> u32 {
    if size > 0 {
        if let Some(mut data) = buffer(DOWNSTREAM_DATA, 0, size as usize) {
            data.make_ascii_uppercase();
            set_buffer(DOWNSTREAM_DATA, 0, data.len(), &data);
        }
    }
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_data(_ctx: u32, _size: u32, _end_of_stream: u32) -> u32 {
    set_buffer(UPSTREAM_DATA, 0, 0, b"[rust] ");
    CONTINUE
}
