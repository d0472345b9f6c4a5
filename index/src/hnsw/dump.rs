//! The file a graph is saved to: a header (magic, format version, byte-order mark, dimension,
//! quantization, M, point count, entry point), the keys, levels, vectors and links as arrays in
//! native byte order, then a CRC-32 of everything before it.

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};

use super::layout::Vectors;
use super::{unpack, HnswGraph, MAX_LEVEL, NO_ENTRY, RELAXED};
use crate::error::{IndexError, Result};
use crate::types::{HnswParams, Quantization};

const MAGIC: &[u8; 8] = b"MIRHNSW\0";
const FORMAT_VERSION: u32 = 1;
/// Written in native order; a dump from a machine of the other byte order reads as foreign.
const BYTE_ORDER_MARK: u32 = 0x0102_0304;

impl HnswGraph {
    /// Writes the graph as one file (see the module docs).
    pub(super) fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let nodes = self.read();
        let mut w = Crc32Writer::new(out);
        w.write_all(MAGIC)?;
        for x in [
            FORMAT_VERSION,
            BYTE_ORDER_MARK,
            nodes.dim as u32,
            quantization_code(self.quantization),
            self.m as u32,
        ] {
            w.write_all(&x.to_ne_bytes())?;
        }
        w.write_all(&(nodes.len() as u64).to_ne_bytes())?;
        w.write_all(&self.entry.load(AtomicOrdering::Acquire).to_ne_bytes())?;
        w.write_all(bytemuck::cast_slice(&nodes.keys))?;
        w.write_all(&nodes.levels)?;
        match &nodes.vectors {
            Vectors::F32(d) => w.write_all(bytemuck::cast_slice(d))?,
            Vectors::F16(d) => w.write_all(bytemuck::cast_slice(d))?,
            Vectors::I8 { codes, scales } => {
                w.write_all(bytemuck::cast_slice(codes))?;
                w.write_all(bytemuck::cast_slice(scales))?;
            }
        }
        write_atomics(&mut w, &nodes.links0)?;
        for u in &nodes.upper {
            write_atomics(&mut w, u)?;
        }
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_ne_bytes())?;
        w.inner.flush()
    }

    /// Loads a graph written by [`GraphEngine::save`](crate::graph::GraphEngine::save). A file
    /// that is damaged, foreign, or made for other settings is an error, never a crash, so the
    /// store can rebuild from its database.
    pub fn load(
        path: &Path,
        dim: usize,
        params: &HnswParams,
        quantization: Quantization,
    ) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| {
            IndexError::Graph(format!("cannot load {}: {e}", path.display()))
        };
        let file = fs_err::File::open(path).map_err(|e| fail(&e))?;
        let graph = Self::new(dim, params, quantization, 0);
        graph
            .read_from(&mut BufReader::with_capacity(1 << 20, file), dim)
            .map_err(|e| fail(&e))?;
        Ok(graph)
    }

    fn read_from(&self, input: &mut impl Read, dim: usize) -> std::result::Result<(), String> {
        let mut r = Crc32Reader {
            inner: input,
            crc: crc32fast::Hasher::new(),
        };
        let io = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the file is truncated".to_string()
            } else {
                e.to_string()
            }
        };
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(io)?;
        if &magic != MAGIC {
            return Err("not a mirage-hnsw graph".into());
        }
        let mut u32s = [0u32; 5];
        for x in &mut u32s {
            *x = read_u32(&mut r).map_err(io)?;
        }
        let [version, bom, file_dim, quant, m] = u32s;
        if version != FORMAT_VERSION || bom != BYTE_ORDER_MARK {
            return Err(format!(
                "format {version} (byte order {bom:#x}); this build reads {FORMAT_VERSION}"
            ));
        }
        if file_dim as usize != dim
            || quant != quantization_code(self.quantization)
            || m as usize != self.m
        {
            return Err(format!(
                "it holds {file_dim}-d vectors (quantization code {quant}, M {m}), the \
                 collection {dim}-d {} with M {}",
                self.quantization, self.m
            ));
        }
        let count = read_u64(&mut r).map_err(io)? as usize;
        let entry = read_u64(&mut r).map_err(io)?;
        if count >= u32::MAX as usize {
            return Err(format!("{count} points is more than a graph holds"));
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        // Sizes come from the file; reading in bounded chunks means a lying header fails at
        // the end of the file instead of allocating whatever it claims.
        nodes.keys = read_vec::<u64>(&mut r, count).map_err(io)?;
        nodes.levels = read_vec::<u8>(&mut r, count).map_err(io)?;
        if nodes.levels.iter().any(|&l| usize::from(l) > MAX_LEVEL) {
            return Err("a point's level is out of range".into());
        }
        let values = count * dim;
        nodes.vectors = match self.quantization {
            Quantization::F32 => Vectors::F32(read_vec(&mut r, values).map_err(io)?),
            Quantization::F16 => Vectors::F16(read_vec(&mut r, values).map_err(io)?),
            Quantization::I8 => Vectors::I8 {
                codes: read_vec(&mut r, values).map_err(io)?,
                scales: read_vec(&mut r, count).map_err(io)?,
            },
        };
        let (stride0, stride) = (nodes.stride0, nodes.stride);
        nodes.links0 = atomics(read_vec::<u32>(&mut r, count * stride0).map_err(io)?);
        let mut upper = Vec::with_capacity(count);
        for i in 0..count {
            let level = usize::from(nodes.levels[i]);
            upper.push(
                atomics(read_vec::<u32>(&mut r, level * stride).map_err(io)?).into_boxed_slice(),
            );
        }
        nodes.upper = upper;
        nodes.advise_huge_pages(0);
        let computed = r.crc.clone().finalize();
        let stored = read_u32(&mut *r.inner).map_err(io)?;
        if computed != stored {
            return Err("checksum mismatch: the file is damaged".into());
        }
        if r.inner.read(&mut [0u8; 1]).map_err(io)? != 0 {
            return Err("trailing bytes after the checksum".into());
        }
        // The checksum proves the file is as written; these prove a writer of this format
        // wrote it sanely, so no walk can index out of bounds.
        let in_range = |slots: &[AtomicU32]| {
            let n = slots[0].load(RELAXED) as usize;
            n < slots.len()
                && slots[1..=n]
                    .iter()
                    .all(|s| (s.load(RELAXED) as usize) < count)
        };
        let links_ok = nodes.links0.chunks(stride0).all(in_range)
            && nodes.upper.iter().all(|u| u.chunks(stride).all(in_range));
        let entry_ok = entry == NO_ENTRY && count == 0
            || (entry != NO_ENTRY && {
                let (node, level) = unpack(entry);
                (node as usize) < count && usize::from(nodes.levels[node as usize]) == level
            });
        if !links_ok || !entry_ok {
            return Err("links or entry point out of range".into());
        }
        self.entry.store(entry, AtomicOrdering::Release);
        Ok(())
    }
}

fn quantization_code(q: Quantization) -> u32 {
    match q {
        Quantization::F32 => 0,
        Quantization::F16 => 1,
        Quantization::I8 => 2,
    }
}

fn atomics(v: Vec<u32>) -> Vec<AtomicU32> {
    v.into_iter().map(AtomicU32::new).collect()
}

fn write_atomics(w: &mut impl Write, slots: &[AtomicU32]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(slots.len().min(1 << 16));
    for chunk in slots.chunks(1 << 16) {
        buf.clear();
        buf.extend(chunk.iter().map(|s| s.load(RELAXED)));
        w.write_all(bytemuck::cast_slice(&buf))?;
    }
    Ok(())
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_ne_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// Reads `n` plain values, growing the vector chunk by chunk as the bytes arrive.
fn read_vec<T: bytemuck::Pod>(r: &mut impl Read, n: usize) -> std::io::Result<Vec<T>> {
    const CHUNK: usize = 1 << 20;
    let mut out: Vec<T> = Vec::new();
    while out.len() < n {
        let at = out.len();
        let take = (n - at).min(CHUNK);
        // Exact steps: the vector ends with no spare capacity to hold memory for nothing.
        out.reserve_exact(take);
        out.resize(at + take, T::zeroed());
        r.read_exact(bytemuck::cast_slice_mut(&mut out[at..]))?;
    }
    Ok(out)
}

struct Crc32Writer<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Crc32Writer<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Crc32Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Crc32Reader<'a, R> {
    inner: &'a mut R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for Crc32Reader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}
