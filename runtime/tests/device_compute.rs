//! Device tests: open the Vulkan device and run real compute dispatches written in WGSL.
//! Every test follows the rule in `unimem::device::test_support` (fail with
//! `UNIMEM_REQUIRE_DEVICE=1`, else skip with a notice when there is no device).

use unimem::device::test_support::{assert_no_validation_errors, test_device};
use unimem::device::DeviceError;
use unimem::kernel::compile_wgsl_named;

const AFFINE: &str = r#"
struct Params { n: u32, factor: u32 }
var<immediate> params: Params;

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<storage, read_write> wide: array<vec2<u32>>;

@compute @workgroup_size(64)
fn affine(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= params.n {
        return;
    }
    dst[i] = src[i] * params.factor + i;

    // 64-bit arithmetic (shaderInt64): a value that does not fit in 32 bits.
    let big: u64 = u64(src[i]) * 0x100000001lu + (u64(i) << 33u);
    wide[i] = vec2<u32>(u32(big & 0xfffffffflu), u32(big >> 32u));
}
"#;

#[test]
fn wgsl_dispatch_computes_every_element() {
    let Some(device) = test_device("wgsl_dispatch_computes_every_element") else {
        return;
    };
    let kernel = compile_wgsl_named("affine.wgsl", AFFINE, "affine").unwrap();
    let pipeline = device.create_pipeline(&kernel).unwrap();
    assert_eq!(pipeline.immediate_size(), 8);
    assert_eq!(pipeline.bindings().len(), 3);

    const N: u32 = 5000; // not a multiple of the workgroup size: the tail is guarded
    let mut src = device.create_host_buffer(u64::from(N) * 4).unwrap();
    let mut dst = device.create_host_buffer(u64::from(N + 16) * 4).unwrap();
    let mut wide = device.create_host_buffer(u64::from(N) * 8).unwrap();
    assert!(
        dst.as_slice::<u32>().iter().all(|&v| v == 0),
        "buffers start zeroed"
    );
    for (i, v) in src.as_mut_slice::<u32>().iter_mut().enumerate() {
        *v = (i as u32).wrapping_mul(2_654_435_761) >> 4;
    }
    // Sentinels past the end: the kernel must not write them.
    for v in &mut dst.as_mut_slice::<u32>()[N as usize..] {
        *v = 0xdead_beef;
    }

    let params = [N, 3u32];
    device
        .dispatch(
            &pipeline,
            &mut [&mut src, &mut dst, &mut wide],
            bytemuck::cast_slice(&params),
            [kernel.groups_for(N), 1, 1],
        )
        .unwrap();

    let s: &[u32] = src.as_slice();
    let d: &[u32] = dst.as_slice();
    let w: &[[u32; 2]] = wide.as_slice();
    for i in 0..N as usize {
        let expected = s[i].wrapping_mul(3).wrapping_add(i as u32);
        assert_eq!(d[i], expected, "dst[{i}]");
        let big = u64::from(s[i])
            .wrapping_mul(0x1_0000_0001)
            .wrapping_add((i as u64) << 33);
        assert_eq!(
            u64::from(w[i][0]) | (u64::from(w[i][1]) << 32),
            big,
            "wide[{i}]"
        );
    }
    assert!(
        d[N as usize..].iter().all(|&v| v == 0xdead_beef),
        "wrote past n"
    );

    // A second dispatch with different immediates reuses the command buffer, fence and
    // descriptor set.
    let params = [100u32, 7];
    device
        .dispatch(
            &pipeline,
            &mut [&mut src, &mut dst, &mut wide],
            bytemuck::cast_slice(&params),
            [2, 1, 1],
        )
        .unwrap();
    let s: &[u32] = src.as_slice();
    let d: &[u32] = dst.as_slice();
    assert_eq!(d[99], s[99].wrapping_mul(7) + 99);
    assert_eq!(
        d[100],
        s[100].wrapping_mul(3) + 100,
        "element 100 keeps the first result"
    );
    assert_no_validation_errors("wgsl_dispatch_computes_every_element");
}

#[test]
fn dispatch_arguments_are_validated() {
    let Some(device) = test_device("dispatch_arguments_are_validated") else {
        return;
    };
    let kernel = compile_wgsl_named("affine.wgsl", AFFINE, "affine").unwrap();
    let pipeline = device.create_pipeline(&kernel).unwrap();
    let mut a = device.create_host_buffer(256).unwrap();
    let mut b = device.create_host_buffer(256).unwrap();
    let mut c = device.create_host_buffer(256).unwrap();
    let params = bytemuck::cast_slice::<u32, u8>(&[1, 1]).to_vec();

    let err = device
        .dispatch(&pipeline, &mut [&mut a, &mut b], &params, [1, 1, 1])
        .unwrap_err();
    assert!(matches!(err, DeviceError::Usage(_)), "{err}");
    assert!(err.to_string().contains("takes 3 buffers"), "{err}");

    let err = device
        .dispatch(
            &pipeline,
            &mut [&mut a, &mut b, &mut c],
            &params[..4],
            [1, 1, 1],
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("expects 8 bytes of immediates"),
        "{err}"
    );

    let too_many = device.report().max_compute_work_group_count[0].saturating_add(1);
    if too_many > device.report().max_compute_work_group_count[0] {
        let err = device
            .dispatch(
                &pipeline,
                &mut [&mut a, &mut b, &mut c],
                &params,
                [too_many, 1, 1],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("maxComputeWorkGroupCount"),
            "{err}"
        );
    }

    assert!(matches!(
        device.create_host_buffer(0),
        Err(DeviceError::Usage(_))
    ));
    let huge = device.report().max_memory_allocation_size + 1;
    let err = device.create_host_buffer(huge).unwrap_err();
    assert!(err.to_string().contains("maxMemoryAllocationSize"), "{err}");

    // The device is still fine after rejected calls.
    device
        .dispatch(&pipeline, &mut [&mut a, &mut b, &mut c], &params, [1, 1, 1])
        .unwrap();
    assert!(!device.is_lost());
    assert_no_validation_errors("dispatch_arguments_are_validated");
}

#[test]
fn buffers_have_distinct_device_addresses() {
    let Some(device) = test_device("buffers_have_distinct_device_addresses") else {
        return;
    };
    let a = device.create_host_buffer(4096).unwrap();
    let b = device.create_host_buffer(4096).unwrap();
    assert_ne!(a.device_address(), 0);
    assert_ne!(b.device_address(), 0);
    let (lo, hi) = if a.device_address() < b.device_address() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(
        lo.device_address() + lo.len() <= hi.device_address(),
        "ranges overlap"
    );
    assert_no_validation_errors("buffers_have_distinct_device_addresses");
}

#[test]
fn objects_may_outlive_the_device_handle() {
    let Some(device) = test_device("objects_may_outlive_the_device_handle") else {
        return;
    };
    let kernel = compile_wgsl_named("affine.wgsl", AFFINE, "affine").unwrap();
    let pipeline = device.create_pipeline(&kernel).unwrap();
    let buffer = device.create_host_buffer(64).unwrap();
    // Dropping the Device first is fine: the pipeline and buffer keep the VkDevice alive
    // and destroy their objects before it.
    drop(device);
    drop(pipeline);
    assert_eq!(buffer.as_slice::<u32>().len(), 16);
    assert_no_validation_errors("objects_may_outlive_the_device_handle");
}

#[test]
fn devices_open_concurrently() {
    // Two threads, each with its own instance and device, dispatching at the same time.
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            std::thread::spawn(move || {
                let Some(device) = test_device("devices_open_concurrently") else {
                    return;
                };
                let kernel = compile_wgsl_named("affine.wgsl", AFFINE, "affine").unwrap();
                let pipeline = device.create_pipeline(&kernel).unwrap();
                let mut a = device.create_host_buffer(1024 * 4).unwrap();
                let mut b = device.create_host_buffer(1024 * 4).unwrap();
                let mut c = device.create_host_buffer(1024 * 8).unwrap();
                a.as_mut_slice::<u32>().fill(t + 1);
                let params = [1024u32, 2];
                device
                    .dispatch(
                        &pipeline,
                        &mut [&mut a, &mut b, &mut c],
                        bytemuck::cast_slice(&params),
                        [16, 1, 1],
                    )
                    .unwrap();
                for (i, &v) in b.as_slice::<u32>().iter().enumerate() {
                    assert_eq!(v, (t + 1) * 2 + i as u32);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_no_validation_errors("devices_open_concurrently");
}

const LOOKUP: &str = r#"
@group(0) @binding(0) var<uniform> table: array<vec4<u32>, 64>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn lookup(@builtin(global_invocation_id) id: vec3<u32>) {
    let k = (id.x * 7u) & 255u; // a different word of the table per invocation
    out[id.x] = table[k >> 2u][k & 3u] + id.x;
}
"#;

#[test]
fn uniform_buffers_are_bound_read_and_checked_against_the_declared_size() {
    let Some(device) = test_device("uniform_buffers_are_bound_read_and_checked_against_the_declared_size") else {
        return;
    };
    let kernel = compile_wgsl_named("lookup.wgsl", LOOKUP, "lookup").unwrap();
    assert_eq!(kernel.bindings[0].uniform_bytes, Some(1024));
    assert_eq!(kernel.bindings[1].uniform_bytes, None);
    let pipeline = device.create_pipeline(&kernel).unwrap();
    let mut table = device.create_host_buffer(1024).unwrap();
    for (i, v) in table.as_mut_slice::<u32>().iter_mut().enumerate() {
        *v = (i as u32) * 1000;
    }
    let mut out = device.create_host_buffer(256 * 4).unwrap();
    device.dispatch(&pipeline, &mut [&mut table, &mut out], &[], [4, 1, 1]).unwrap();
    for (i, &v) in out.as_slice::<u32>().iter().enumerate() {
        assert_eq!(v, ((i as u32 * 7) & 255) * 1000 + i as u32, "invocation {i}");
    }
    // A buffer smaller than the declared array is refused, saying why.
    let mut small = device.create_host_buffer(512).unwrap();
    let e = device.dispatch(&pipeline, &mut [&mut small, &mut out], &[], [4, 1, 1]).unwrap_err().to_string();
    assert!(e.contains("uniform @binding(0)") && e.contains("512 bytes") && e.contains("1024 bytes"), "{e}");
    assert_no_validation_errors("uniform_buffers_are_bound_read_and_checked_against_the_declared_size");
}
