//! The part of the proxy-wasm ABI (0.2.1) the Rust compatibility plugins
//! use, written from the specification with no SDK or crate behind it.
//!
//! Every host function lives in the "env" module and returns a status (0
//! is OK). Memory the host hands back is allocated with the plugin's
//! exported `proxy_on_memory_allocate`, so it is the plugin's to free:
//! `take` turns it into a `Vec<u8>` that owns it.

#![allow(dead_code)]

use std::alloc::{alloc, Layout};

pub const OK: u32 = 0;
pub const LOG_INFO: u32 = 2;
pub const LOG_ERROR: u32 = 4;
pub const CONTINUE: u32 = 0;
pub const PAUSE: u32 = 1;
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const REQUEST_BODY: u32 = 0;
pub const RESPONSE_BODY: u32 = 1;
pub const DOWNSTREAM_DATA: u32 = 2;
pub const UPSTREAM_DATA: u32 = 3;
pub const PLUGIN_CONFIGURATION: u32 = 7;
pub const METRIC_COUNTER: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, msg: *const u8, msg_size: usize) -> u32;
    fn proxy_get_header_map_value(map: u32, key: *const u8, key_size: usize, value: *mut *mut u8, value_size: *mut usize) -> u32;
    fn proxy_add_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_replace_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_buffer_bytes(buffer: u32, start: usize, max_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(buffer: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_send_local_response(status: u32, details: *const u8, details_size: usize, body: *const u8, body_size: usize,
        headers: *const u8, headers_size: usize, grpc_status: i32) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, value: *mut *mut u8, value_size: *mut usize) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
}

/// The allocator the host uses to hand memory to the plugin. Zero-size
/// requests get a valid, never-dereferenced pointer.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    match Layout::from_size_align(size.max(1), 1) {
        Ok(layout) => unsafe { alloc(layout) },
        Err(_) => std::ptr::null_mut(),
    }
}

/// ABI marker.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// take owns `size` bytes at `ptr` that the host allocated with
/// proxy_on_memory_allocate (alignment 1, capacity max(size, 1)).
unsafe fn take(ptr: *mut u8, size: usize) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    if size == 0 {
        drop(Vec::from_raw_parts(ptr, 1, 1));
        return Vec::new();
    }
    Vec::from_raw_parts(ptr, size, size)
}

pub fn log(level: u32, msg: &str) {
    unsafe { proxy_log(level, msg.as_ptr(), msg.len()) };
}

pub fn header(map: u32, key: &str) -> Option<Vec<u8>> {
    let (mut ptr, mut size) = (std::ptr::null_mut(), 0usize);
    match unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut ptr, &mut size) } {
        OK => Some(unsafe { take(ptr, size) }),
        _ => None,
    }
}

pub fn add_header(map: u32, key: &str, value: &[u8]) -> u32 {
    unsafe { proxy_add_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

pub fn replace_header(map: u32, key: &str, value: &[u8]) -> u32 {
    unsafe { proxy_replace_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

pub fn remove_header(map: u32, key: &str) -> u32 {
    unsafe { proxy_remove_header_map_value(map, key.as_ptr(), key.len()) }
}

pub fn buffer(kind: u32, start: usize, max: usize) -> Option<Vec<u8>> {
    let (mut ptr, mut size) = (std::ptr::null_mut(), 0usize);
    match unsafe { proxy_get_buffer_bytes(kind, start, max, &mut ptr, &mut size) } {
        OK => Some(unsafe { take(ptr, size) }),
        _ => None,
    }
}

pub fn set_buffer(kind: u32, start: usize, size: usize, data: &[u8]) -> u32 {
    unsafe { proxy_set_buffer_bytes(kind, start, size, data.as_ptr(), data.len()) }
}

/// Serializes pairs as the ABI's pair map: a u32 count, each key and
/// value size as u32, then every key and value followed by a NUL.
pub fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

pub fn send_local_response(status: u32, details: &str, body: &[u8], headers: &[(&str, &str)]) -> u32 {
    let pairs = serialize_pairs(headers);
    unsafe {
        proxy_send_local_response(status, details.as_ptr(), details.len(), body.as_ptr(), body.len(),
            pairs.as_ptr(), pairs.len(), -1)
    }
}

/// Reads the property at the path given as segments.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join("\0");
    let (mut ptr, mut size) = (std::ptr::null_mut(), 0usize);
    match unsafe { proxy_get_property(joined.as_ptr(), joined.len(), &mut ptr, &mut size) } {
        OK => Some(unsafe { take(ptr, size) }),
        _ => None,
    }
}

pub fn define_counter(name: &str) -> Option<u32> {
    let mut id = 0u32;
    match unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) } {
        OK => Some(id),
        _ => None,
    }
}

pub fn increment(id: u32, offset: i64) -> u32 {
    unsafe { proxy_increment_metric(id, offset) }
}
