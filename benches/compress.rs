//! Compression speed of 100 KiB of JSON at the levels `crate::compress` uses: each must
//! stay over 100 MB/s on one core (criterion's throughput line says it).

// Benchmark code: a failed unwrap is a failed run, as in a unit test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pingora_core::protocols::http::compression::Algorithm;
use std::io::Write;

/// 100 KiB of catalog-like JSON: repetitive keys, varied values.
fn json() -> Vec<u8> {
    let mut out = String::from("[");
    let mut i = 0u64;
    while out.len() < 100 * 1024 {
        let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        out.push_str(&format!(
            r#"{{"id":"sku-{i}","name":"Product {h:x}","price":{}.{:02},"stock":{},"tags":["t{}","t{}"]}},"#,
            h % 1000,
            h % 100,
            h % 57,
            h % 13,
            h % 7
        ));
        i += 1;
    }
    out.push(']');
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    let body = json();
    let mut g = c.benchmark_group("compress/100KiB json");
    g.throughput(Throughput::Bytes(body.len() as u64));
    for (name, alg, level) in [
        ("zstd 3", Algorithm::Zstd, 3),
        ("br 4 (Pingora's)", Algorithm::Brotli, 4),
        ("gzip 4", Algorithm::Gzip, 4),
        ("gzip 6", Algorithm::Gzip, 6),
        ("br 3 (Pingora's)", Algorithm::Brotli, 3),
    ] {
        let ratio = {
            let mut e = alg.compressor(level).unwrap();
            let mut n = e.encode(&body, false).unwrap().len();
            n += e.encode(&[], true).unwrap().len();
            n as f64 / body.len() as f64
        };
        println!("{name}: {:.1} % of the input", ratio * 100.0);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut e = alg.compressor(level).unwrap();
                let a = e.encode(&body, false).unwrap();
                let z = e.encode(&[], true).unwrap();
                a.len() + z.len()
            })
        });
    }
    // The gateway's brotli encoder (the crate's writer, finished properly), at its level.
    g.bench_function("br 3 (gateway)", |b| {
        b.iter(|| {
            let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 3, 19);
            w.write_all(&body).unwrap();
            w.into_inner().len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
