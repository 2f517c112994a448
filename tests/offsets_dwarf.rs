//! Every python-offsets value marked `checked = ["dwarf", ...]` against the DWARF debug info of
//! the build named in its table's `[meta] dwarf_build` (a pyenv build with full debug info).
//!
//! A field's C path `Struct.member.sub` is resolved by finding `Struct` (a typedef name or a
//! struct/union tag) at the top level of a compilation unit that defines it completely, following
//! typedefs and qualifiers, and summing `DW_AT_data_member_location` along the members (looking
//! through anonymous struct/union members where a name is not found directly); `sizeof Struct`
//! is the struct's `DW_AT_byte_size`. Compilation units are scanned in order only until every
//! path is resolved, so only a small part of libpython's DWARF is ever parsed.
//!
//! Run with `--nocapture` to see the per-build counts.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use gimli::{constants as dw, AttributeValue, EndianSlice, LittleEndian, UnitOffset};
use memspy::python::layout::{self, OffsetsTable};

type Reader<'a> = EndianSlice<'a, LittleEndian>;
type Unit<'a> = gimli::Unit<Reader<'a>>;
type Entry<'a> = gimli::DebuggingInformationEntry<Reader<'a>>;

/// One field to check.
#[derive(Clone, Debug)]
struct Request {
    /// `section.field` in the table.
    key: String,
    /// The `c` path as written in the table.
    c: String,
    /// Expected offset (`at`).
    at: u64,
    query: Query,
}

#[derive(Clone, Debug)]
enum Query {
    /// `sizeof Root`.
    Sizeof { root: String },
    /// `Root.member.sub...`.
    Member { root: String, members: Vec<String> },
}

impl Query {
    fn parse(c: &str) -> Result<Query, String> {
        if let Some(root) = c.strip_prefix("sizeof ") {
            let root = root.trim();
            if root.is_empty() || root.contains(['.', ' ']) {
                return Err(format!("cannot parse C path {c:?}"));
            }
            return Ok(Query::Sizeof { root: root.into() });
        }
        let mut parts = c.split('.');
        let root = parts.next().unwrap_or_default().to_string();
        let members: Vec<String> = parts.map(str::to_string).collect();
        if root.is_empty() || members.is_empty() || members.iter().any(|m| m.is_empty()) {
            return Err(format!("cannot parse C path {c:?}"));
        }
        Ok(Query::Member { root, members })
    }

    fn root(&self) -> &str {
        match self {
            Query::Sizeof { root } | Query::Member { root, .. } => root,
        }
    }
}

/// What resolving a query in one compilation unit gave.
enum Outcome {
    Offset(u64),
    /// The root type is only declared in this unit; try the next one.
    Incomplete,
}

/// The `.debug_*` sections of an ELF file, loaded into gimli.
struct DebugInfo<'a> {
    dwarf: gimli::Dwarf<Reader<'a>>,
}

impl<'a> DebugInfo<'a> {
    fn load(path: &Path, data: &'a [u8]) -> Result<DebugInfo<'a>, String> {
        let elf = goblin::elf::Elf::parse(data).map_err(|e| format!("{}: {e}", path.display()))?;
        if !elf.little_endian || !elf.is_64 {
            return Err(format!(
                "{}: not a 64-bit little-endian ELF",
                path.display()
            ));
        }
        let mut sections: HashMap<&str, &'a [u8]> = HashMap::new();
        for sh in &elf.section_headers {
            let Some(name) = elf.shdr_strtab.get_at(sh.sh_name) else {
                continue;
            };
            if !name.starts_with(".debug_") || sh.sh_type == goblin::elf::section_header::SHT_NOBITS
            {
                continue;
            }
            if sh.sh_flags & u64::from(goblin::elf::section_header::SHF_COMPRESSED) != 0 {
                return Err(format!(
                    "{}: {name} is compressed; this test reads uncompressed DWARF only",
                    path.display()
                ));
            }
            let range = sh
                .file_range()
                .ok_or_else(|| format!("{name}: no file range"))?;
            let bytes = data
                .get(range)
                .ok_or_else(|| format!("{}: {name} lies outside the file", path.display()))?;
            sections.insert(name, bytes);
        }
        if !sections.contains_key(".debug_info") {
            return Err(format!("{}: no .debug_info section", path.display()));
        }
        let dwarf = gimli::Dwarf::load(|id| {
            let bytes = sections.get(id.name()).copied().unwrap_or(&[]);
            Ok::<_, gimli::Error>(EndianSlice::new(bytes, LittleEndian))
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(DebugInfo { dwarf })
    }

    /// Resolve every request. Returns, per request (same order), the offset or why not, and the
    /// number of compilation units scanned.
    fn resolve_all(&self, requests: &[Request]) -> (Vec<Result<u64, String>>, usize) {
        let mut results: Vec<Option<Result<u64, String>>> = vec![None; requests.len()];
        let mut scanned = 0;
        let mut headers = self.dwarf.units();
        loop {
            let pending: Vec<usize> = (0..requests.len())
                .filter(|&i| results[i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            let header = match headers.next() {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    for i in pending {
                        results[i] = Some(Err(format!("reading .debug_info: {e}")));
                    }
                    break;
                }
            };
            scanned += 1;
            let unit = match self.dwarf.unit(header) {
                Ok(u) => u,
                Err(e) => {
                    for i in pending {
                        results[i] = Some(Err(format!("parsing a compilation unit: {e}")));
                    }
                    break;
                }
            };
            let wanted: HashSet<&str> = pending.iter().map(|&i| requests[i].query.root()).collect();
            let index = match self.top_level_types(&unit, &wanted) {
                Ok(ix) => ix,
                Err(e) => {
                    for i in pending {
                        results[i] = Some(Err(format!("indexing a compilation unit: {e}")));
                    }
                    break;
                }
            };
            for i in pending {
                let q = &requests[i].query;
                for &root in index.get(q.root()).into_iter().flatten() {
                    match self.resolve(&unit, root, q) {
                        Ok(Outcome::Offset(v)) => results[i] = Some(Ok(v)),
                        Ok(Outcome::Incomplete) => continue,
                        Err(e) => results[i] = Some(Err(e)),
                    }
                    break;
                }
            }
        }
        let results = results
            .into_iter()
            .zip(requests)
            .map(|(r, req)| {
                r.unwrap_or_else(|| {
                    Err(format!(
                        "no compilation unit defines {:?} completely (as a typedef or struct/union tag)",
                        req.query.root()
                    ))
                })
            })
            .collect();
        (results, scanned)
    }

    /// Top-level typedefs and struct/union types of a unit whose name is wanted.
    fn top_level_types(
        &self,
        unit: &Unit<'a>,
        wanted: &HashSet<&str>,
    ) -> gimli::Result<HashMap<String, Vec<UnitOffset>>> {
        let mut found: HashMap<String, Vec<UnitOffset>> = HashMap::new();
        let mut tree = unit.entries_tree(None)?;
        let root = tree.root()?;
        let mut children = root.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            if !matches!(
                e.tag(),
                dw::DW_TAG_typedef | dw::DW_TAG_structure_type | dw::DW_TAG_union_type
            ) {
                continue;
            }
            let Some(name) = self.name(unit, e)? else {
                continue;
            };
            if wanted.contains(name) {
                found.entry(name.to_string()).or_default().push(e.offset());
            }
        }
        Ok(found)
    }

    fn name(&self, unit: &Unit<'a>, e: &Entry<'a>) -> gimli::Result<Option<&'a str>> {
        let Some(value) = e.attr_value(dw::DW_AT_name) else {
            return Ok(None);
        };
        let s = self.dwarf.attr_string(unit, value)?;
        Ok(Some(s.to_string()?))
    }

    fn describe(&self, unit: &Unit<'a>, e: &Entry<'a>) -> String {
        let name = self.name(unit, e).ok().flatten().unwrap_or("<anonymous>");
        format!("{} {name}", e.tag().static_string().unwrap_or("DW_TAG_?"))
    }

    /// The DIE at `off` with typedefs and qualifiers followed away.
    fn strip(&self, unit: &Unit<'a>, mut off: UnitOffset) -> Result<Entry<'a>, String> {
        for _ in 0..64 {
            let e = unit.entry(off).map_err(|e| e.to_string())?;
            match e.tag() {
                dw::DW_TAG_typedef
                | dw::DW_TAG_const_type
                | dw::DW_TAG_volatile_type
                | dw::DW_TAG_restrict_type
                | dw::DW_TAG_atomic_type => off = self.type_of(unit, &e)?,
                _ => return Ok(e),
            }
        }
        Err("typedef chain longer than 64".into())
    }

    fn type_of(&self, unit: &Unit<'a>, e: &Entry<'a>) -> Result<UnitOffset, String> {
        match e.attr_value(dw::DW_AT_type) {
            Some(AttributeValue::UnitRef(off)) => Ok(off),
            Some(other) => Err(format!(
                "{}: unsupported DW_AT_type form {other:?}",
                self.describe(unit, e)
            )),
            None => Err(format!("{} has no type", self.describe(unit, e))),
        }
    }

    fn resolve(&self, unit: &Unit<'a>, root: UnitOffset, q: &Query) -> Result<Outcome, String> {
        let mut cur = self.strip(unit, root)?;
        if !is_aggregate(&cur) {
            return Err(format!(
                "{:?} is {}, not a struct or union",
                q.root(),
                self.describe(unit, &cur)
            ));
        }
        if cur.has_attr(dw::DW_AT_declaration) {
            return Ok(Outcome::Incomplete);
        }
        let members = match q {
            Query::Sizeof { .. } => {
                return cur
                    .attr(dw::DW_AT_byte_size)
                    .and_then(|a| a.udata_value())
                    .map(Outcome::Offset)
                    .ok_or_else(|| format!("{} has no byte size", self.describe(unit, &cur)));
            }
            Query::Member { members, .. } => members,
        };
        let mut total = 0;
        for (i, member) in members.iter().enumerate() {
            let what = format!("{}.{}", q.root(), members[..i].join("."));
            let what = what.trim_end_matches('.');
            if !is_aggregate(&cur) {
                return Err(format!(
                    "{what} is {}, not a struct or union: cannot take .{member}",
                    self.describe(unit, &cur)
                ));
            }
            if cur.has_attr(dw::DW_AT_declaration) {
                return Err(format!("{what} is an incomplete type here"));
            }
            let (off, ty) = self.find_member(unit, &cur, member, 0)?.ok_or_else(|| {
                format!(
                    "{what} ({}) has no member {member:?}, directly or in an anonymous member",
                    self.describe(unit, &cur)
                )
            })?;
            total += off;
            if i + 1 < members.len() {
                cur = self.strip(unit, ty)?;
            }
        }
        Ok(Outcome::Offset(total))
    }

    /// Offset and type of the member `name` of the struct/union `agg`, looking into anonymous
    /// struct/union members when it is not a direct member.
    fn find_member(
        &self,
        unit: &Unit<'a>,
        agg: &Entry<'a>,
        name: &str,
        depth: usize,
    ) -> Result<Option<(u64, UnitOffset)>, String> {
        if depth > 16 {
            return Err("anonymous members nested deeper than 16".into());
        }
        let in_union = agg.tag() == dw::DW_TAG_union_type;
        let mut anonymous = Vec::new();
        let mut tree = unit
            .entries_tree(Some(agg.offset()))
            .map_err(|e| e.to_string())?;
        let node = tree.root().map_err(|e| e.to_string())?;
        let mut children = node.children();
        while let Some(child) = children.next().map_err(|e| e.to_string())? {
            let m = child.entry();
            if m.tag() != dw::DW_TAG_member {
                continue;
            }
            let member_name = self.name(unit, m).map_err(|e| e.to_string())?;
            if member_name.is_some_and(|n| n != name) {
                continue;
            }
            let loc = self.member_location(unit, m, in_union)?;
            let ty = self.type_of(unit, m)?;
            match member_name {
                Some(_) => return Ok(Some((loc, ty))),
                None => anonymous.push((loc, ty)),
            }
        }
        for (loc, ty) in anonymous {
            let inner = self.strip(unit, ty)?;
            if !is_aggregate(&inner) {
                continue;
            }
            if let Some((off, ty)) = self.find_member(unit, &inner, name, depth + 1)? {
                return Ok(Some((loc + off, ty)));
            }
        }
        Ok(None)
    }

    fn member_location(
        &self,
        unit: &Unit<'a>,
        m: &Entry<'a>,
        in_union: bool,
    ) -> Result<u64, String> {
        match m.attr(dw::DW_AT_data_member_location) {
            Some(attr) => attr.udata_value().ok_or_else(|| {
                format!(
                    "{}: unsupported DW_AT_data_member_location {:?}",
                    self.describe(unit, m),
                    attr.value()
                )
            }),
            None if m.has_attr(dw::DW_AT_data_bit_offset) => Err(format!(
                "{} is a bit-field: it has no byte offset",
                self.describe(unit, m)
            )),
            // Union members sit at offset 0 and GCC leaves the attribute out.
            None if in_union => Ok(0),
            None => Err(format!("{} has no location", self.describe(unit, m))),
        }
    }
}

fn is_aggregate(e: &Entry<'_>) -> bool {
    matches!(e.tag(), dw::DW_TAG_structure_type | dw::DW_TAG_union_type)
}

/// The fields of a table that claim DWARF verification.
fn dwarf_requests(table: &OffsetsTable) -> Vec<Result<Request, String>> {
    let mut out = Vec::new();
    for (section, fields) in &table.sections {
        for (name, field) in fields {
            if !field.checked.iter().any(|c| c == "dwarf") {
                continue;
            }
            let key = format!("{section}.{name}");
            out.push(
                Query::parse(&field.c)
                    .map(|query| Request {
                        key: key.clone(),
                        c: field.c.clone(),
                        at: field.at,
                        query,
                    })
                    .map_err(|e| format!("{key}: {e}")),
            );
        }
    }
    out
}

/// The library (or, for a static build, the executable) holding the interpreter's DWARF.
fn debug_file(py: &common::Interpreter) -> PathBuf {
    let (major, minor) = py.minor();
    let lib = py
        .exe
        .parent()
        .and_then(Path::parent)
        .map(|prefix| prefix.join(format!("lib/libpython{major}.{minor}.so.1.0")));
    match lib {
        Some(lib) if py.linkage == "shared" && lib.exists() => lib,
        _ => py.exe.clone(),
    }
}

/// Result of checking one table against its build.
struct BuildReport {
    minor: String,
    build: String,
    file: PathBuf,
    verified: usize,
    units_scanned: usize,
    millis: u128,
    failures: Vec<String>,
}

fn check_build(minor: &str, table: &OffsetsTable, py: &common::Interpreter) -> BuildReport {
    let start = Instant::now();
    let file = debug_file(py);
    let mut report = BuildReport {
        minor: minor.into(),
        build: table.meta.dwarf_build.clone(),
        file: file.clone(),
        verified: 0,
        units_scanned: 0,
        millis: 0,
        failures: Vec::new(),
    };
    let mut requests = Vec::new();
    for r in dwarf_requests(table) {
        match r {
            Ok(r) => requests.push(r),
            Err(e) => report.failures.push(e),
        }
    }
    // Probes that keep the resolver honest: a known answer and a path that must not resolve.
    let probes = [
        ("(probe) PyObject.ob_type", "PyObject.ob_type", Some(8)),
        (
            "(probe) PyThreadState.no_such_member",
            "PyThreadState.no_such_member",
            None,
        ),
    ];
    for (key, c, _) in probes {
        requests.push(Request {
            key: key.into(),
            c: c.into(),
            at: 0,
            query: Query::parse(c).unwrap(),
        });
    }
    let data = match std::fs::read(&file) {
        Ok(d) => d,
        Err(e) => {
            report.failures.push(format!("{}: {e}", file.display()));
            return report;
        }
    };
    let info = match DebugInfo::load(&file, &data) {
        Ok(i) => i,
        Err(e) => {
            report.failures.push(e);
            return report;
        }
    };
    let (results, scanned) = info.resolve_all(&requests);
    report.units_scanned = scanned;
    let n_fields = requests.len() - probes.len();
    for (req, got) in requests[..n_fields].iter().zip(&results) {
        match got {
            Ok(v) if *v == req.at => report.verified += 1,
            Ok(v) => report.failures.push(format!(
                "{}: DWARF says {:?} is at {v}, the table says at = {}",
                req.key, req.c, req.at
            )),
            Err(e) => report
                .failures
                .push(format!("{}: {:?} does not resolve: {e}", req.key, req.c)),
        }
    }
    for ((key, _, want), got) in probes.iter().zip(&results[n_fields..]) {
        match (want, got) {
            (Some(w), Ok(v)) if w == v => {}
            (None, Err(_)) => {}
            _ => report
                .failures
                .push(format!("{key}: resolver gave {got:?}, expected {want:?}")),
        }
    }
    report.millis = start.elapsed().as_millis();
    report
}

#[test]
fn dwarf_confirms_every_dwarf_checked_offset() {
    let start = Instant::now();
    let interpreters = common::interpreters();
    let under_ci = std::env::var("CI").as_deref() == Ok("true");
    let mut problems = Vec::new();
    let mut jobs = Vec::new();
    for minor in layout::supported_minors() {
        let table = layout::table(minor).expect("table");
        let n_dwarf = dwarf_requests(&table).len();
        let build = table.meta.dwarf_build.trim().to_string();
        if build.is_empty() {
            if n_dwarf > 0 {
                problems.push(format!(
                    "{minor}: {n_dwarf} fields are checked \"dwarf\" but [meta] dwarf_build is empty"
                ));
            }
            continue;
        }
        if n_dwarf == 0 {
            problems.push(format!(
                "{minor}: dwarf_build = {build:?} but no field is checked \"dwarf\""
            ));
            continue;
        }
        let Some((kind, version)) = build.split_once(' ') else {
            problems.push(format!(
                "{minor}: dwarf_build = {build:?} is not \"<kind> <version>\""
            ));
            continue;
        };
        let label = format!("{kind}-{version}");
        let Some(py) = interpreters.iter().find(|i| i.label == label) else {
            let msg = format!(
                "{minor}: dwarf build {label} is not provisioned; {n_dwarf} fields NOT verified"
            );
            if under_ci {
                problems.push(msg);
            } else {
                eprintln!("\n*** SKIPPED {msg} (run scripts/provision-pythons.sh) ***\n");
            }
            continue;
        };
        let (maj, min) = py.minor();
        if format!("{maj}.{min}") != minor {
            problems.push(format!(
                "{minor}: dwarf_build {label} is Python {}, not {minor}",
                py.version
            ));
            continue;
        }
        jobs.push((minor, table, py.clone()));
    }

    let reports: Vec<BuildReport> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(minor, table, py)| s.spawn(move || check_build(minor, table, py)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("check thread"))
            .collect()
    });

    for r in &reports {
        println!(
            "{:>5}  {:<14} {:>3} fields verified  ({} compilation units of {}, {} ms)",
            r.minor,
            r.build,
            r.verified,
            r.units_scanned,
            r.file.display(),
            r.millis
        );
        for f in &r.failures {
            problems.push(format!("{} ({}): {f}", r.minor, r.build));
        }
    }
    println!(
        "total: {} fields verified in {} builds, {} ms",
        reports.iter().map(|r| r.verified).sum::<usize>(),
        reports.len(),
        start.elapsed().as_millis()
    );
    assert!(
        problems.is_empty(),
        "python-offsets tables disagree with DWARF:\n  {}",
        problems.join("\n  ")
    );
}
