//! Deterministic OCI image layouts that the tests build themselves.
//!
//! No image is downloaded: every layer is assembled here from the host's
//! Debian busybox (and the shared libraries it links against), so the tests
//! need no network and no binary blobs in git. Every byte is a pure function
//! of the host's files and [`BUILDER_VERSION`]: entries are sorted, owners,
//! modes and mtimes are fixed, gzip carries no timestamp or file name and uses
//! a fixed level (or stored blocks), and JSON is produced in a fixed key
//! order. The same machine
//! therefore always produces the same digests, which lets tests compare
//! digests across processes and against what a registry serves.
//!
//! Images are built once per machine into a cache under the cargo target dir;
//! see [`cached`] for how concurrent test processes share it safely.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Bumped whenever the builder changes what it produces, so that a cache
/// built by an older version of this file is never reused.
// 3: flate2 compresses with zlib-rs, whose bytes differ from miniz_oxide's.
const BUILDER_VERSION: &str = "crius-test-images/3";

/// 2024-01-01T00:00:00Z: a fixed mtime for every tar entry, so that the
/// layers do not depend on when (or from which files) they were built.
const EPOCH: u64 = 1_704_067_200;
/// `created` in every config, matching [`EPOCH`].
const CREATED: &str = "2024-01-01T00:00:00Z";

/// Gzip level for the small layers; any fixed level is deterministic.
const SMALL_LAYER_GZIP: Gzip = Gzip::Level(6);
/// The 50 MiB layer is incompressible pseudo-random data, so compressing it
/// buys nothing, and flate2 (unoptimised in test builds) needs seconds even
/// at level 0; stored deflate blocks are written directly instead.
const BIG_LAYER_GZIP: Gzip = Gzip::Stored;
/// Size of the pseudo-random file in the multilayer image.
pub const BIG_FILE_SIZE: usize = 50 * 1024 * 1024;
/// Path (inside the image) of the pseudo-random file in the multilayer image.
pub const BIG_FILE_PATH: &str = "data/random.bin";

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The `PATH` every test image sets in its config.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Names accepted by [`build_into`].
pub const IMAGE_NAMES: [&str; 4] = ["busybox", "multilayer", "nonroot", "multiarch"];

/// An OCI image layout on disk.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub name: &'static str,
    /// The layout directory (holds `oci-layout`, `index.json`, `blobs/`).
    pub layout: PathBuf,
    /// The tag under which `index.json` names the image.
    pub tag: &'static str,
    /// Digest of the manifest (or, for `multiarch`, the index) that the
    /// layout's `index.json` points at.
    pub digest: String,
}

/// One entry of a layer tar, as read back by [`TestImage::layer_entries`].
#[derive(Clone, Debug)]
pub struct LayerEntry {
    /// Path without a leading `/` or `./` and without a trailing `/`.
    pub path: String,
    pub kind: tar::EntryType,
    /// Target of a hard or symbolic link.
    pub link_name: Option<String>,
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
    pub size: u64,
}

impl TestImage {
    /// Path of a blob in this layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("unsupported digest {digest}"));
        self.layout.join("blobs").join("sha256").join(hex)
    }

    pub fn read_blob(&self, digest: &str) -> Vec<u8> {
        let path = self.blob_path(digest);
        fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()))
    }

    pub fn read_json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.read_blob(digest))
            .unwrap_or_else(|e| panic!("blob {digest} of {} is not JSON: {e}", self.name))
    }

    /// The manifest or index that [`TestImage::digest`] names.
    pub fn top(&self) -> Value {
        self.read_json(&self.digest)
    }

    /// Raw bytes of [`Self::top`], as a registry must serve them.
    pub fn top_bytes(&self) -> Vec<u8> {
        self.read_blob(&self.digest)
    }

    /// Digest of the image manifest for `architecture` (linux): the top
    /// object itself for a single-platform image, else the index entry.
    pub fn manifest_digest(&self, architecture: &str) -> String {
        let top = self.top();
        if top["mediaType"] != MEDIA_TYPE_INDEX {
            return self.digest.clone();
        }
        top["manifests"]
            .as_array()
            .expect("index has manifests")
            .iter()
            .find(|m| {
                m["platform"]["os"] == "linux" && m["platform"]["architecture"] == architecture
            })
            .and_then(|m| m["digest"].as_str())
            .unwrap_or_else(|| panic!("{} has no linux/{architecture} manifest", self.name))
            .to_string()
    }

    /// The image manifest for `architecture` (see [`Self::manifest_digest`]).
    pub fn manifest(&self, architecture: &str) -> Value {
        self.read_json(&self.manifest_digest(architecture))
    }

    /// The image config for `architecture`.
    pub fn config(&self, architecture: &str) -> Value {
        let manifest = self.manifest(architecture);
        let digest = manifest["config"]["digest"]
            .as_str()
            .expect("manifest config has a digest");
        self.read_json(digest)
    }

    /// Layer descriptors (`digest`, `size`, `mediaType`) for `architecture`.
    pub fn layers(&self, architecture: &str) -> Vec<Value> {
        self.manifest(architecture)["layers"]
            .as_array()
            .expect("manifest has layers")
            .clone()
    }

    /// Decompresses a layer blob and lists its tar entries in order.
    pub fn layer_entries(&self, layer_digest: &str) -> Vec<LayerEntry> {
        let file = fs::File::open(self.blob_path(layer_digest)).expect("open layer blob");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut out = Vec::new();
        for entry in archive.entries().expect("layer is a tar") {
            let entry = entry.expect("read layer tar entry");
            let header = entry.header();
            let path = entry
                .path()
                .expect("entry path")
                .to_string_lossy()
                .into_owned();
            out.push(LayerEntry {
                path: normalize(&path),
                kind: header.entry_type(),
                link_name: entry
                    .link_name()
                    .expect("entry link name")
                    .map(|l| l.to_string_lossy().into_owned()),
                uid: header.uid().expect("entry uid"),
                gid: header.gid().expect("entry gid"),
                mode: header.mode().expect("entry mode"),
                size: header.size().expect("entry size"),
            });
        }
        out
    }
}

fn normalize(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// The host's busybox and the libraries it needs. Test images embed these.
pub struct HostBusybox {
    pub binary: Vec<u8>,
    /// Applet names from `busybox --list`, sorted, without `busybox` itself.
    pub applets: Vec<String>,
    /// `(absolute path as printed by ldd, file contents)`, sorted by path;
    /// includes the ELF interpreter.
    pub libraries: Vec<(String, Vec<u8>)>,
    /// Absolute path of the ELF interpreter (the ldd line without `=>`).
    pub interpreter: String,
}

const HOST_BUSYBOX: &str = "/bin/busybox";

/// Reads (once per process) the host busybox, its applet list and its
/// shared libraries.
pub fn host_busybox() -> &'static HostBusybox {
    static HOST: OnceLock<HostBusybox> = OnceLock::new();
    HOST.get_or_init(|| {
        let binary = fs::read(HOST_BUSYBOX)
            .unwrap_or_else(|e| panic!("read {HOST_BUSYBOX} (apt-get install busybox): {e}"));

        let list = run_stdout(Command::new(HOST_BUSYBOX).arg("--list"));
        let mut applets: Vec<String> = list
            .lines()
            .map(str::trim)
            // `busybox` itself is the link target; a link of that name would
            // overwrite the binary it points at.
            .filter(|name| !name.is_empty() && *name != "busybox" && !name.contains('/'))
            .map(str::to_string)
            .collect();
        applets.sort();
        applets.dedup();

        let ldd = run_stdout(Command::new("ldd").arg(HOST_BUSYBOX));
        let (paths, interpreter) = parse_ldd(&ldd);
        let interpreter = interpreter
            .unwrap_or_else(|| panic!("ldd {HOST_BUSYBOX} printed no ELF interpreter:\n{ldd}"));
        let libraries = paths
            .into_iter()
            .map(|path| {
                // fs::read follows host symlinks (e.g. /lib64/ld-linux-x86-64.so.2),
                // so the image gets a regular file at the path the loader asks for.
                let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
                (path, bytes)
            })
            .collect();
        HostBusybox {
            binary,
            applets,
            libraries,
            interpreter,
        }
    })
}

fn run_stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("command output is UTF-8")
}

/// Parses `ldd` output into the sorted library paths and the interpreter.
///
/// Lines look like `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` (the interpreter) and
/// `linux-vdso.so.1 (0x...)` (provided by the kernel, nothing to copy).
fn parse_ldd(output: &str) -> (Vec<String>, Option<String>) {
    let mut paths = Vec::new();
    let mut interpreter = None;
    for line in output.lines() {
        let line = line.trim();
        let (path, is_interpreter) = match line.split_once("=>") {
            Some((_, rest)) => (rest.split_whitespace().next().unwrap_or(""), false),
            None => (line.split_whitespace().next().unwrap_or(""), true),
        };
        if !path.starts_with('/') {
            continue;
        }
        if is_interpreter {
            interpreter = Some(path.to_string());
        }
        paths.push(path.to_string());
    }
    paths.sort();
    paths.dedup();
    (paths, interpreter)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Covers everything the images are built from, so a changed host busybox,
/// library or builder invalidates the cache instead of silently reusing it.
fn fingerprint() -> &'static str {
    static FINGERPRINT: OnceLock<String> = OnceLock::new();
    FINGERPRINT.get_or_init(|| {
        let host = host_busybox();
        let mut hasher = Sha256::new();
        // Length-prefix every field so that no two inputs hash alike.
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(BUILDER_VERSION.as_bytes());
        field(&host.binary);
        field(host.applets.join("\n").as_bytes());
        field(host.interpreter.as_bytes());
        for (path, bytes) in &host.libraries {
            field(path.as_bytes());
            field(bytes);
        }
        hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Layer construction

enum Node {
    Dir,
    File(Vec<u8>),
    HardLink(String),
}

struct Entry {
    path: String,
    mode: u32,
    uid: u64,
    gid: u64,
    node: Node,
}

/// Collects entries and writes them as a deterministic tar.
#[derive(Default)]
struct LayerBuilder {
    entries: Vec<Entry>,
}

impl LayerBuilder {
    fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.dir_owned(path, mode, 0, 0)
    }

    fn dir_owned(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        self.push(path, mode, uid, gid, Node::Dir)
    }

    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> &mut Self {
        self.file_owned(path, mode, 0, 0, data)
    }

    fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: Vec<u8>,
    ) -> &mut Self {
        self.push(path, mode, uid, gid, Node::File(data))
    }

    fn hard_link(&mut self, path: &str, target: &str) -> &mut Self {
        self.push(path, 0o755, 0, 0, Node::HardLink(normalize(target)))
    }

    fn push(&mut self, path: &str, mode: u32, uid: u64, gid: u64, node: Node) -> &mut Self {
        let path = normalize(path);
        assert!(!path.is_empty(), "layer entry needs a path");
        self.entries.push(Entry {
            path,
            mode,
            uid,
            gid,
            node,
        });
        self
    }

    /// Writes the tar and gzips it.
    ///
    /// Order: all directories and files sorted by path (a parent's path is a
    /// prefix of its children's, so it sorts first), then all hard links
    /// sorted by path, because an extractor can only link to a file it has
    /// already written (`bin/[` would otherwise sort before `bin/busybox`).
    fn finish(mut self, gzip: Gzip) -> Layer {
        self.entries.sort_by(|a, b| {
            let a_link = matches!(a.node, Node::HardLink(_));
            let b_link = matches!(b.node, Node::HardLink(_));
            (a_link, &a.path).cmp(&(b_link, &b.path))
        });
        for pair in self.entries.windows(2) {
            assert_ne!(pair[0].path, pair[1].path, "duplicate layer entry");
        }

        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(EPOCH);
            header.set_uid(entry.uid);
            header.set_gid(entry.gid);
            header.set_mode(entry.mode);
            match &entry.node {
                Node::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{}/", entry.path), std::io::empty())
                        .expect("append directory to tar");
                }
                Node::File(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    builder
                        .append_data(&mut header, &entry.path, data.as_slice())
                        .expect("append file to tar");
                }
                Node::HardLink(target) => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, &entry.path, target)
                        .expect("append hard link to tar");
                }
            }
        }
        let tar = builder.into_inner().expect("finish tar");
        let blob = gzip.compress(&tar);
        // sha256 is slow in unoptimised test builds (~1.5 s per 50 MB);
        // hash the tar and the blob on two cores.
        let (diff_id, digest) = std::thread::scope(|scope| {
            let diff_id = scope.spawn(|| digest_of(&tar));
            let digest = digest_of(&blob);
            (diff_id.join().expect("hash layer tar"), digest)
        });
        Layer {
            diff_id,
            digest,
            blob,
            media_type: MEDIA_TYPE_LAYER_GZIP,
        }
    }
}

/// How a layer is gzipped. Both ways write no file name, mtime 0 and a
/// fixed deflate strategy, so the bytes are a function of the input alone.
#[derive(Clone, Copy)]
enum Gzip {
    Level(u32),
    /// Deflate "stored" blocks (RFC 1951 BTYPE 00), i.e. no compression.
    Stored,
}

impl Gzip {
    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Gzip::Level(level) => {
                let mut encoder: GzEncoder<Vec<u8>> = GzBuilder::new().mtime(0).write(
                    Vec::with_capacity(data.len() / 2 + 1024),
                    Compression::new(level),
                );
                encoder.write_all(data).expect("gzip layer");
                encoder.finish().expect("finish gzip")
            }
            Gzip::Stored => gzip_stored(data),
        }
    }
}

/// A single gzip member (RFC 1952) holding `data` in stored deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = u16::MAX as usize;
    let blocks = data.len().div_ceil(MAX_BLOCK).max(1);
    let mut out = Vec::with_capacity(10 + blocks * 5 + data.len() + 8);
    // Magic, CM = 8 (deflate), FLG = 0 (no name/comment/extra), MTIME = 0,
    // XFL = 0, OS = 255 (unknown): nothing that varies between builds.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    for i in 0..blocks {
        let chunk = &data[(i * MAX_BLOCK).min(data.len())..((i + 1) * MAX_BLOCK).min(data.len())];
        // Byte-aligned block header: BFINAL bit, BTYPE 00, padding bits;
        // then LEN and its one's complement NLEN, little-endian.
        out.push(u8::from(i + 1 == blocks));
        let len = u16::try_from(chunk.len()).expect("stored block fits u16");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the input size modulo 2^32 by definition.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

struct Layer {
    /// sha256 of the uncompressed tar (config `rootfs.diff_ids`).
    diff_id: String,
    /// sha256 of the gzip blob (manifest layer digest).
    digest: String,
    blob: Vec<u8>,
    media_type: &'static str,
}

const PASSWD_BASE: &str = "root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP_BASE: &str = "root:x:0:\nnobody:x:65534:\n";

/// The base layer: busybox, its libraries, applet hard links and a minimal
/// filesystem skeleton.
fn busybox_layer() -> Layer {
    let host = host_busybox();
    let mut layer = LayerBuilder::default();
    let skeleton = [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("var", 0o755),
    ];
    for (dir, mode) in skeleton {
        layer.dir(dir, mode);
    }
    layer.file("bin/busybox", 0o755, host.binary.clone());
    for applet in &host.applets {
        layer.hard_link(&format!("bin/{applet}"), "bin/busybox");
    }
    // Real directories for the library paths: the host's /lib and /lib64 may
    // be symlinks (merged /usr), which the image does not reproduce.
    let mut lib_dirs = std::collections::BTreeSet::new();
    for (path, _) in &host.libraries {
        for ancestor in Path::new(path).ancestors().skip(1) {
            let dir = normalize(&ancestor.to_string_lossy());
            if !dir.is_empty() && !skeleton.iter().any(|(s, _)| *s == dir) {
                lib_dirs.insert(dir);
            }
        }
    }
    for dir in &lib_dirs {
        layer.dir(dir, 0o755);
    }
    for (path, bytes) in &host.libraries {
        layer.file(path, 0o755, bytes.clone());
    }
    layer.file("etc/passwd", 0o644, PASSWD_BASE.as_bytes().to_vec());
    layer.file("etc/group", 0o644, GROUP_BASE.as_bytes().to_vec());
    layer.finish(SMALL_LAYER_GZIP)
}

/// nonroot's second layer: user `app` (1000:1000) with its home directory.
fn nonroot_layer() -> Layer {
    let mut layer = LayerBuilder::default();
    layer.dir("etc", 0o755);
    layer.file(
        "etc/passwd",
        0o644,
        format!("{PASSWD_BASE}app:x:1000:1000:app:/home/app:/bin/sh\n").into_bytes(),
    );
    layer.file(
        "etc/group",
        0o644,
        format!("{GROUP_BASE}app:x:1000:\n").into_bytes(),
    );
    layer.dir("home", 0o755);
    layer.dir_owned("home/app", 0o755, 1000, 1000);
    layer.file_owned(
        "home/app/hello.txt",
        0o644,
        1000,
        1000,
        b"owned by app\n".to_vec(),
    );
    layer.finish(SMALL_LAYER_GZIP)
}

/// Seeded xorshift64: cheap, deterministic and incompressible enough that
/// the layer really is ~50 MB on the wire.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = seed;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// multilayer's big layer: 50 MiB of pseudo-random bytes plus files that the
/// next layer deletes (whiteout) or hides (opaque directory).
fn big_layer() -> Layer {
    let mut layer = LayerBuilder::default();
    layer.dir("data", 0o755);
    layer.file(
        BIG_FILE_PATH,
        0o644,
        pseudo_random(BIG_FILE_SIZE, 0x9e37_79b9_7f4a_7c15),
    );
    layer.file("data/old.txt", 0o644, b"old\n".to_vec());
    layer.dir("data/dir", 0o755);
    layer.file("data/dir/a.txt", 0o644, b"a\n".to_vec());
    layer.file("data/dir/b.txt", 0o644, b"b\n".to_vec());
    layer.finish(BIG_LAYER_GZIP)
}

/// multilayer's top layer: deletes data/old.txt, makes data/dir opaque (so
/// a.txt and b.txt disappear) and adds data/dir/new.txt.
fn whiteout_layer() -> Layer {
    let mut layer = LayerBuilder::default();
    layer.dir("data", 0o755);
    layer.file("data/.wh.old.txt", 0o644, Vec::new());
    layer.dir("data/dir", 0o755);
    layer.file("data/dir/.wh..wh..opq", 0o644, Vec::new());
    layer.file("data/dir/new.txt", 0o644, b"new\n".to_vec());
    layer.finish(SMALL_LAYER_GZIP)
}

/// The arm64 image in multiarch: never run, so a text file is enough.
fn arm64_layer() -> Layer {
    let mut layer = LayerBuilder::default();
    layer.file("hello.txt", 0o644, b"hello from linux/arm64\n".to_vec());
    layer.finish(SMALL_LAYER_GZIP)
}

// ---------------------------------------------------------------------------
// Layout construction

/// Blobs of one layout, keyed (and therefore written) by digest.
#[derive(Default)]
struct Layout {
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    fn add(&mut self, bytes: Vec<u8>) -> (String, usize) {
        let digest = digest_of(&bytes);
        let size = bytes.len();
        self.blobs.insert(digest.clone(), bytes);
        (digest, size)
    }

    fn add_json(&mut self, value: &Value) -> (String, usize) {
        self.add(serde_json::to_vec(value).expect("serialize JSON"))
    }

    /// Adds config, layers and manifest; returns the manifest descriptor.
    fn add_image(
        &mut self,
        name: &str,
        architecture: &str,
        config: Value,
        layers: Vec<Layer>,
    ) -> Value {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let history: Vec<Value> = (0..layers.len())
            .map(|i| {
                json!({
                    "created": CREATED,
                    "created_by": format!("crius test image builder: {name} layer {i}"),
                })
            })
            .collect();
        let config = json!({
            "created": CREATED,
            "architecture": architecture,
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        let (config_digest, config_size) = self.add_json(&config);
        let layer_descriptors: Vec<Value> = layers
            .into_iter()
            .map(|layer| {
                let (digest, size) = self.add(layer.blob);
                assert_eq!(digest, layer.digest);
                json!({ "mediaType": layer.media_type, "digest": digest, "size": size })
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {
                "mediaType": MEDIA_TYPE_CONFIG,
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layer_descriptors,
        });
        let (digest, size) = self.add_json(&manifest);
        json!({ "mediaType": MEDIA_TYPE_MANIFEST, "digest": digest, "size": size })
    }

    /// Writes the layout into `dir` with `top` tagged `tag` in index.json.
    fn write(self, dir: &Path, mut top: Value, tag: &str) {
        let blob_dir = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blob_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", blob_dir.display()));
        for (digest, bytes) in &self.blobs {
            let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
            fs::write(blob_dir.join(hex), bytes).expect("write blob");
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        top["annotations"] = json!({ REF_NAME_ANNOTATION: tag });
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [top],
        });
        fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("serialize index.json"),
        )
        .expect("write index.json");
    }
}

fn base_config() -> Value {
    json!({ "Env": [DEFAULT_PATH], "Cmd": ["sh"] })
}

/// Every image is tagged `latest` in its layout.
const TAG: &str = "latest";

fn static_name(name: &str) -> &'static str {
    IMAGE_NAMES
        .iter()
        .copied()
        .find(|n| *n == name)
        .unwrap_or_else(|| panic!("unknown test image {name:?}; known: {IMAGE_NAMES:?}"))
}

/// Builds image `name` (one of [`IMAGE_NAMES`]) from scratch into `dir`,
/// which may exist but must not hold another layout. Bypasses the cache.
pub fn build_into(name: &str, dir: &Path) -> TestImage {
    let name = static_name(name);
    let mut layout = Layout::default();
    let top = match name {
        "busybox" => layout.add_image(name, "amd64", base_config(), vec![busybox_layer()]),
        "nonroot" => {
            let mut config = base_config();
            config["User"] = json!("1000");
            layout.add_image(
                name,
                "amd64",
                config,
                vec![busybox_layer(), nonroot_layer()],
            )
        }
        "multilayer" => layout.add_image(
            name,
            "amd64",
            base_config(),
            vec![busybox_layer(), big_layer(), whiteout_layer()],
        ),
        "multiarch" => {
            // Same inputs as the busybox image, so the amd64 entry has exactly
            // the busybox image's manifest digest.
            let mut amd64 =
                layout.add_image("busybox", "amd64", base_config(), vec![busybox_layer()]);
            let arm64_config = json!({ "Env": [DEFAULT_PATH], "Cmd": ["cat", "/hello.txt"] });
            let mut arm64 = layout.add_image(
                "multiarch-arm64",
                "arm64",
                arm64_config,
                vec![arm64_layer()],
            );
            amd64["platform"] = json!({ "architecture": "amd64", "os": "linux" });
            arm64["platform"] = json!({ "architecture": "arm64", "os": "linux" });
            let index = json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_INDEX,
                "manifests": [amd64, arm64],
            });
            let (digest, size) = layout.add_json(&index);
            json!({ "mediaType": MEDIA_TYPE_INDEX, "digest": digest, "size": size })
        }
        _ => unreachable!("static_name only returns known names"),
    };
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    layout.write(dir, top, TAG);
    open(name, dir)
}

/// A one-layer image whose layer blob is `blob`, served as `media_type`, and whose config
/// claims `diff_id`: for other compressions, and broken or hostile layers. Not cached.
pub fn raw_layer_image(
    dir: &Path,
    blob: Vec<u8>,
    media_type: &'static str,
    diff_id: &str,
) -> TestImage {
    let mut layout = Layout::default();
    let layer = Layer {
        diff_id: diff_id.to_string(),
        digest: digest_of(&blob),
        blob,
        media_type,
    };
    let top = layout.add_image("raw", "amd64", base_config(), vec![layer]);
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    layout.write(dir, top.clone(), TAG);
    TestImage {
        name: "raw",
        layout: dir.to_path_buf(),
        tag: TAG,
        digest: top["digest"]
            .as_str()
            .expect("descriptor digest")
            .to_string(),
    }
}

/// Opens an existing layout built by this module.
pub fn open(name: &str, dir: &Path) -> TestImage {
    let name = static_name(name);
    let path = dir.join("index.json");
    let mut text = String::new();
    fs::File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let index: Value = serde_json::from_str(&text).expect("index.json is JSON");
    let top = &index["manifests"][0];
    assert_eq!(
        top["annotations"][REF_NAME_ANNOTATION],
        TAG,
        "{} is not tagged {TAG}",
        path.display()
    );
    TestImage {
        name,
        layout: dir.to_path_buf(),
        tag: TAG,
        digest: top["digest"]
            .as_str()
            .expect("index.json entry has a digest")
            .to_string(),
    }
}

/// Where cached layouts live: the integration tests' scratch dir inside the
/// cargo target dir (so `cargo clean` removes them), else the system temp dir.
pub fn cache_root() -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("crius-test-images")
}

/// Returns image `name` from the per-machine cache, building it if needed.
///
/// Concurrent test processes (cargo-nextest runs each test in its own
/// process) may all find the cache empty. Each builds into its own temporary
/// directory beside the final one and `rename`s it into place; rename is
/// atomic, so a layout at the final path is always complete, and renaming
/// onto an existing (non-empty) directory fails, in which case the loser
/// discards its copy and uses the winner's, which has identical bytes.
/// Within one process a `OnceLock` per image avoids building twice.
fn cached(name: &'static str) -> TestImage {
    static CELLS: [OnceLock<TestImage>; IMAGE_NAMES.len()] =
        [const { OnceLock::new() }; IMAGE_NAMES.len()];
    let slot = IMAGE_NAMES
        .iter()
        .position(|n| *n == name)
        .expect("known image name");
    CELLS[slot].get_or_init(|| build_cached(name)).clone()
}

fn build_cached(name: &'static str) -> TestImage {
    let root = cache_root();
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    let dir = root.join(format!("{name}-{}", fingerprint()));
    if !dir.exists() {
        let partial = tempfile::Builder::new()
            .prefix(&format!(".{name}-partial-"))
            .tempdir_in(&root)
            .expect("create temporary image dir in cache");
        build_into(name, partial.path());
        // From here on the directory is either renamed away or removed below.
        let partial = partial.keep();
        if let Err(e) = fs::rename(&partial, &dir) {
            let _ = fs::remove_dir_all(&partial);
            assert!(
                dir.join("index.json").exists(),
                "move image {name} into {}: {e}",
                dir.display()
            );
        }
    }
    open(name, &dir)
}

/// Debian's dynamic busybox with its libraries and applet hard links.
pub fn busybox() -> TestImage {
    cached("busybox")
}

/// busybox plus a ~50 MB pseudo-random layer and a whiteout/opaque layer.
pub fn multilayer() -> TestImage {
    cached("multilayer")
}

/// busybox plus user `app` (1000:1000); config `User` is `1000`.
pub fn nonroot() -> TestImage {
    cached("nonroot")
}

/// OCI image index: linux/amd64 (the busybox manifest) and a tiny linux/arm64.
pub fn multiarch() -> TestImage {
    cached("multiarch")
}

/// All four cached images.
pub fn all() -> Vec<TestImage> {
    vec![busybox(), multilayer(), nonroot(), multiarch()]
}
