//! properties: reads its configuration in proxy_on_configure, logs it, and
//! on each request adds headers from the configuration and from the
//! request.path and plugin_name properties, and counts requests in the
//! counter compat_rust_requests.
mod proxy_wasm;
use proxy_wasm::*;
use std::cell::RefCell;

thread_local! {
    static CONFIG: RefCell<Vec<u8>> = RefCell::new(Vec::new());
    static REQUESTS: RefCell<u32> = RefCell::new(0);
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_id: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: u32) -> u32 {
    let config = if size == 0 { Vec::new() } else {
        match buffer(PLUGIN_CONFIGURATION, 0, size as usize) {
            Some(c) => c,
            None => return 0,
        }
    };
    log(LOG_INFO, &format!("rust properties: configured with {}", String::from_utf8_lossy(&config)));
    CONFIG.with(|c| *c.borrow_mut() = config);
    match define_counter("compat_rust_requests") {
        Some(id) => {
            REQUESTS.with(|r| *r.borrow_mut() = id);
            1
        }
        None => 0,
    }
}

fn add_property(key: &str, path: &[&str]) {
    let value = property(path).unwrap_or_else(|| b"absent".to_vec());
    add_header(REQUEST_HEADERS, key, &value);
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_ctx: u32, _headers: u32, _end_of_stream: u32) -> u32 {
    CONFIG.with(|c| add_header(REQUEST_HEADERS, "x-compat-config", &c.borrow()));
    add_property("x-compat-path", &["request", "path"]);
    add_property("x-compat-plugin-name", &["plugin_name"]);
    REQUESTS.with(|r| increment(*r.borrow(), 1));
    CONTINUE
}
