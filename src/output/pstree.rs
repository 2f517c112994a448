//! The await tree of a process's asyncio tasks, drawn as CPython's `python -m asyncio pstree
//! PID` draws it (Lib/asyncio/tools.py, 3.14 and 3.15), line for line, so that the two can be
//! compared and memspy's reading of tasks checked against CPython's own.
//!
//! Each task that nobody awaits is a root, `└── (T) name`; below a task hang the frames of the
//! coroutine stack of whoever awaits each child (outermost first, one node per distinct
//! `qualname file:line` under the same parent), and the child tasks below them; a task that
//! awaits no other task shows its own coroutine stack.

use std::collections::HashMap;

/// One task as the tree needs it.
#[derive(Clone, Debug)]
pub struct TaskNode {
    pub id: u64,
    pub name: String,
    /// Its coroutine stack, innermost first: `qualname file:line` (or `qualname`).
    pub stack: Vec<String>,
    /// Ids of the tasks (or futures) that await it.
    pub awaited_by: Vec<u64>,
}

/// How one frame is labelled: `qualname file:line`, or the name alone without a place.
pub fn frame_label(qualname: &str, file: &str, line: i64) -> String {
    if line == 0 && file.is_empty() {
        qualname.to_string()
    } else {
        format!("{qualname} {file}:{line}")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Key {
    Task(u64),
    Coroutine(usize),
}

/// The tree's lines, or the cycles that make it impossible (each a list of task names, the
/// first repeated at the end).
pub fn render(tasks: &[TaskNode]) -> Result<Vec<String>, Vec<Vec<String>>> {
    // Index: names by id in order of appearance, edges (awaiter, its stack, awaited).
    let mut order: Vec<u64> = Vec::new();
    let mut names: HashMap<u64, &str> = HashMap::new();
    let mut stacks: HashMap<u64, &[String]> = HashMap::new();
    for t in tasks {
        if names.insert(t.id, &t.name).is_none() {
            order.push(t.id);
        }
        stacks.insert(t.id, &t.stack);
    }
    let mut awaits: Vec<(u64, &[String], u64)> = Vec::new();
    for t in tasks {
        for &parent in &t.awaited_by {
            let stack = stacks.get(&parent).copied().unwrap_or(&[]);
            awaits.push((parent, stack, t.id));
        }
    }
    let cycles = find_cycles(&awaits);
    if !cycles.is_empty() {
        return Err(cycles
            .iter()
            .map(|c| {
                c.iter()
                    .map(|id| names.get(id).map_or(format!("{id:#x}"), |n| n.to_string()))
                    .collect()
            })
            .collect());
    }
    // The tree: task nodes first (in order), then coroutine nodes as made.
    let mut labels: Vec<(Key, String)> = order
        .iter()
        .map(|id| (Key::Task(*id), names[id].to_string()))
        .collect();
    let mut children: HashMap<Key, Vec<Key>> = HashMap::new();
    let mut coroutines: HashMap<(Key, String), Key> = HashMap::new();
    let mut node = |parent: Key,
                    frame: &str,
                    labels: &mut Vec<(Key, String)>,
                    children: &mut HashMap<Key, Vec<Key>>|
     -> Key {
        if let Some(&k) = coroutines.get(&(parent, frame.to_string())) {
            return k;
        }
        let k = Key::Coroutine(labels.len());
        labels.push((k, frame.to_string()));
        children.entry(parent).or_default().push(k);
        coroutines.insert((parent, frame.to_string()), k);
        k
    };
    for &(parent, stack, child) in &awaits {
        let mut cur = Key::Task(parent);
        for frame in stack.iter().rev() {
            cur = node(cur, frame, &mut labels, &mut children);
        }
        let kids = children.entry(cur).or_default();
        if !kids.contains(&Key::Task(child)) {
            kids.push(Key::Task(child));
        }
    }
    let awaiting: std::collections::HashSet<u64> = awaits.iter().map(|a| a.0).collect();
    for id in &order {
        if !awaiting.contains(id) {
            if let Some(stack) = stacks.get(id) {
                let mut cur = Key::Task(*id);
                for frame in stack.iter().rev() {
                    cur = node(cur, frame, &mut labels, &mut children);
                }
            }
        }
    }
    let label_of: HashMap<Key, &str> = labels.iter().map(|(k, l)| (*k, l.as_str())).collect();
    let all_children: std::collections::HashSet<Key> =
        children.values().flatten().copied().collect();
    let mut lines = Vec::new();
    for (key, _) in &labels {
        if !all_children.contains(key) {
            draw(*key, "", true, &label_of, &children, &mut lines);
        }
    }
    Ok(lines)
}

fn draw(
    key: Key,
    prefix: &str,
    last: bool,
    labels: &HashMap<Key, &str>,
    children: &HashMap<Key, Vec<Key>>,
    out: &mut Vec<String>,
) {
    let flag = match key {
        Key::Task(_) => "(T)",
        Key::Coroutine(_) => "",
    };
    let label = labels.get(&key).copied().unwrap_or("");
    out.push(format!(
        "{prefix}{}{flag} {label}",
        if last { "└── " } else { "├── " }
    ));
    let prefix = format!("{prefix}{}", if last { "    " } else { "│   " });
    let kids = children.get(&key).map_or(&[][..], |k| &k[..]);
    for (i, kid) in kids.iter().enumerate() {
        draw(*kid, &prefix, i + 1 == kids.len(), labels, children, out);
    }
}

/// Cycles of the awaiter -> awaited graph (depth first, as CPython's tool looks for them).
fn find_cycles(awaits: &[(u64, &[String], u64)]) -> Vec<Vec<u64>> {
    let mut graph: Vec<(u64, Vec<u64>)> = Vec::new();
    for &(parent, _, child) in awaits {
        match graph.iter_mut().find(|(p, _)| *p == parent) {
            Some((_, kids)) => {
                if !kids.contains(&child) {
                    kids.push(child)
                }
            }
            None => graph.push((parent, vec![child])),
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color: HashMap<u64, Color> = HashMap::new();
    let mut cycles = Vec::new();
    // An explicit stack: a deep await chain must not overflow memspy's.
    for &(start, _) in &graph {
        if color.get(&start).copied().unwrap_or(Color::White) != Color::White {
            continue;
        }
        let mut path: Vec<u64> = vec![start];
        let mut next: Vec<usize> = vec![0];
        color.insert(start, Color::Grey);
        while let Some(&v) = path.last() {
            let i = *next.last().unwrap_or(&0);
            let kids = graph
                .iter()
                .find(|(p, _)| *p == v)
                .map_or(&[][..], |(_, k)| &k[..]);
            if let Some(&w) = kids.get(i) {
                *next.last_mut().expect("in step with path") += 1;
                match color.get(&w).copied().unwrap_or(Color::White) {
                    Color::White => {
                        color.insert(w, Color::Grey);
                        path.push(w);
                        next.push(0);
                    }
                    Color::Grey => {
                        let at = path.iter().position(|&p| p == w).unwrap_or(0);
                        let mut c = path[at..].to_vec();
                        c.push(w);
                        cycles.push(c);
                    }
                    Color::Black => {}
                }
            } else {
                color.insert(v, Color::Black);
                path.pop();
                next.pop();
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, name: &str, stack: &[&str], by: &[u64]) -> TaskNode {
        TaskNode {
            id,
            name: name.into(),
            stack: stack.iter().map(|s| s.to_string()).collect(),
            awaited_by: by.to_vec(),
        }
    }

    #[test]
    fn a_task_group_draws_as_cpython_does() {
        let tasks = [
            task(
                1,
                "parent",
                &["_aexit t.py:9", "__aexit__ t.py:5", "main a.py:3"],
                &[],
            ),
            task(2, "child-a", &["sleep t.py:1", "kid a.py:7"], &[1]),
            task(3, "child-b", &["sleep t.py:1", "kid a.py:7"], &[1]),
        ];
        let lines = render(&tasks).unwrap();
        assert_eq!(
            lines,
            [
                "└── (T) parent",
                "    └──  main a.py:3",
                "        └──  __aexit__ t.py:5",
                "            └──  _aexit t.py:9",
                "                ├── (T) child-a",
                "                │   └──  kid a.py:7",
                "                │       └──  sleep t.py:1",
                "                └── (T) child-b",
                "                    └──  kid a.py:7",
                "                        └──  sleep t.py:1",
            ]
        );
    }

    #[test]
    fn cycles_are_found() {
        let tasks = [task(1, "a", &[], &[2]), task(2, "b", &[], &[1])];
        let cycles = render(&tasks).unwrap_err();
        assert_eq!(cycles, vec![vec!["b".to_string(), "a".into(), "b".into()]]);
    }
}
