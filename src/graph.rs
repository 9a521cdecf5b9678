//! The dependency graph of a configuration's blocks (petgraph).
//!
//! Invariants:
//! - An edge `a → b` means "a refers to b" (b must be evaluated, and later
//!   created, before a); it carries the span of the reference.
//! - A cycle is reported with every block on it and the reference that closes it.
//! - DOT output is deterministic (sorted nodes and edges).

use crate::config::diag::Diagnostic;
use crate::config::source::Span;
use crate::model::Kind;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// A block of the configuration that takes part in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    Var(String),
    Local(String),
    Resource(Kind, String),
    /// A data source block (`data.network.lan`).
    Data(Kind, String),
    Output(String),
    /// A module call block (`module.web`): evaluated as a whole, every
    /// instance of it, in its caller's order.
    Module(String),
    /// A block inside a module instance (`module.web["a"].instance.vm`), in
    /// the configuration's merged graph (DOT, `--target`); never the root's.
    Scoped(crate::model::ModulePath, Box<Node>),
}

impl Node {
    /// `n` in the module instance `path` (unchanged in the root module).
    pub fn scoped(path: &crate::model::ModulePath, n: Node) -> Node {
        if path.is_root() { n } else { Node::Scoped(path.clone(), Box::new(n)) }
    }

    /// The node inside any module scope.
    pub fn inner(&self) -> &Node {
        match self {
            Node::Scoped(_, n) => n.inner(),
            n => n,
        }
    }

    /// A resource or data source block, in any module.
    pub fn is_resource(&self) -> bool {
        matches!(self.inner(), Node::Resource(..) | Node::Data(..))
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Var(n) => write!(f, "var.{n}"),
            Node::Local(n) => write!(f, "local.{n}"),
            Node::Resource(k, n) => write!(f, "{k}.{n}"),
            Node::Data(k, n) => write!(f, "data.{k}.{n}"),
            Node::Output(n) => write!(f, "output.{n}"),
            Node::Module(n) => write!(f, "module.{n}"),
            Node::Scoped(p, n) => write!(f, "{p}.{n}"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DepGraph {
    pub g: DiGraph<Node, Span>,
    index: HashMap<Node, NodeIndex>,
}

impl DepGraph {
    pub fn add_node(&mut self, n: Node) -> NodeIndex {
        if let Some(i) = self.index.get(&n) {
            return *i;
        }
        let i = self.g.add_node(n.clone());
        self.index.insert(n, i);
        i
    }

    /// `from` refers to `to` at `span`. Repeated references keep the first span.
    pub fn add_edge(&mut self, from: &Node, to: &Node, span: Span) {
        let a = self.add_node(from.clone());
        let b = self.add_node(to.clone());
        if self.g.find_edge(a, b).is_none() {
            self.g.add_edge(a, b, span);
        }
    }

    pub fn contains(&self, n: &Node) -> bool {
        self.index.contains_key(n)
    }

    /// Whether any node refers to `n`.
    pub fn is_referenced(&self, n: &Node) -> bool {
        self.index.get(n).is_some_and(|i| self.g.neighbors_directed(*i, petgraph::Direction::Incoming).next().is_some())
    }

    /// Direct dependencies of a node.
    pub fn deps(&self, n: &Node) -> Vec<&Node> {
        match self.index.get(n) {
            Some(i) => self.g.neighbors(*i).map(|j| &self.g[j]).collect(),
            None => Vec::new(),
        }
    }

    /// One diagnostic per cycle (strongly connected component with a loop).
    pub fn cycles(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for scc in petgraph::algo::tarjan_scc(&self.g) {
            let self_loop = scc.len() == 1 && self.g.find_edge(scc[0], scc[0]).is_some();
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *members.iter().min_by_key(|i| self.g[**i].to_string()).unwrap_or(&scc[0]);
            let path = self.cycle_path(start, &members);
            // path: [start, n1, ..., nk] with an edge nk → start closing it.
            let mut edges: Vec<(NodeIndex, NodeIndex)> = path.windows(2).map(|w| (w[0], w[1])).collect();
            let last = *path.last().unwrap_or(&start);
            edges.push((last, start));
            let names: Vec<String> = path.iter().map(|i| self.g[*i].to_string()).collect();
            let closing = self.g.find_edge(last, start).map(|e| self.g[e]);
            let mut d = Diagnostic::error(format!(
                "dependency cycle: {} -> {}",
                names.join(" -> "),
                self.g[start]
            ))
            .at_opt(closing)
            .label(format!("this reference from {} to {} closes the cycle", self.g[last], self.g[start]));
            for (a, b) in &edges[..edges.len() - 1] {
                if let Some(e) = self.g.find_edge(*a, *b) {
                    d = d.note(Some(self.g[e]), format!("{} refers to {} here", self.g[*a], self.g[*b]));
                }
            }
            let all: BTreeSet<String> = members.iter().map(|i| self.g[*i].to_string()).collect();
            if all.len() > path.len() {
                d = d.note(None, format!("all blocks in this cycle: {}", all.into_iter().collect::<Vec<_>>().join(", ")));
            }
            out.push(d.help("break the cycle by removing one of these references"));
        }
        out
    }

    /// A simple cycle through `start` staying inside `members` (DFS).
    fn cycle_path(&self, start: NodeIndex, members: &BTreeSet<NodeIndex>) -> Vec<NodeIndex> {
        let mut stack = vec![(start, vec![start])];
        let mut visited = BTreeSet::new();
        while let Some((n, path)) = stack.pop() {
            let mut next: Vec<NodeIndex> = self.g.neighbors(n).filter(|m| members.contains(m)).collect();
            next.sort_by_key(|m| std::cmp::Reverse(self.g[*m].to_string()));
            for m in next {
                if m == start {
                    return path;
                }
                if visited.insert(m) {
                    let mut p = path.clone();
                    p.push(m);
                    stack.push((m, p));
                }
            }
        }
        vec![start]
    }

    /// Nodes with dependencies first (stable: ties by name). Requires an acyclic graph.
    pub fn order(&self) -> Vec<Node> {
        let mut indeg: HashMap<NodeIndex, usize> = self.g.node_indices().map(|i| (i, self.g.neighbors(i).count())).collect();
        let mut ready: BTreeSet<(String, NodeIndex)> =
            indeg.iter().filter(|(_, d)| **d == 0).map(|(i, _)| (self.g[*i].to_string(), *i)).collect();
        let mut out = Vec::with_capacity(self.g.node_count());
        while let Some(first) = ready.iter().next().cloned() {
            ready.remove(&first);
            let i = first.1;
            out.push(self.g[i].clone());
            for e in self.g.edges_directed(i, petgraph::Direction::Incoming) {
                let src = e.source();
                if let Some(d) = indeg.get_mut(&src) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert((self.g[src].to_string(), src));
                    }
                }
            }
        }
        out
    }

    /// Resource → resource dependencies (data sources count as resources
    /// here), looking through locals and variables.
    pub fn resource_edges(&self) -> BTreeSet<(Node, Node)> {
        let mut out = BTreeSet::new();
        for i in self.g.node_indices() {
            if !self.g[i].is_resource() {
                continue;
            }
            let mut stack: Vec<NodeIndex> = self.g.neighbors(i).collect();
            let mut seen = BTreeSet::new();
            while let Some(j) = stack.pop() {
                if !seen.insert(j) {
                    continue;
                }
                match &self.g[j] {
                    n if n.is_resource() => {
                        if j != i {
                            out.insert((self.g[i].clone(), self.g[j].clone()));
                        }
                    }
                    _ => stack.extend(self.g.neighbors(j)),
                }
            }
        }
        out
    }

    /// Adds `other` (a module's own graph) with every node scoped to `path`.
    pub fn merge_scoped(&mut self, other: &DepGraph, path: &crate::model::ModulePath) {
        for i in other.g.node_indices() {
            self.add_node(Node::scoped(path, other.g[i].clone()));
        }
        for e in other.g.edge_references() {
            let (a, b) = (Node::scoped(path, other.g[e.source()].clone()), Node::scoped(path, other.g[e.target()].clone()));
            self.add_edge(&a, &b, *e.weight());
        }
    }

    /// Graphviz DOT: resources as nodes (data sources dashed: read, never
    /// changed), one edge per dependency (dependent → dependency).
    pub fn to_dot(&self) -> String {
        let mut nodes: Vec<&Node> = self.g.node_weights().filter(|n| n.is_resource()).collect();
        nodes.sort();
        let mut s = String::from("digraph virtform {\n  rankdir = \"RL\";\n  node [shape = box, fontname = \"sans-serif\"];\n");
        for n in nodes {
            let shape = match n.inner() {
                Node::Resource(Kind::Network, _) => "hexagon",
                Node::Resource(Kind::Image, _) | Node::Resource(Kind::Disk, _) | Node::Resource(Kind::Volume, _) => "cylinder",
                Node::Resource(Kind::Port, _) => "ellipse",
                Node::Data(Kind::Network, _) => "hexagon, style = dashed",
                _ => "box",
            };
            s.push_str(&format!("  \"{}\" [label = \"{}\", shape = {shape}];\n", dot_escape(&n.to_string()), dot_escape(&n.to_string())));
        }
        for (a, b) in self.resource_edges() {
            s.push_str(&format!("  \"{}\" -> \"{}\";\n", dot_escape(&a.to_string()), dot_escape(&b.to_string())));
        }
        s.push_str("}\n");
        s
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(n: usize) -> Span {
        Span { file: 0, start: n, end: n + 1 }
    }

    #[test]
    fn referenced_means_an_incoming_edge() {
        let mut g = DepGraph::default();
        let a = Node::Local("a".into());
        let b = Node::Local("b".into());
        g.add_node(a.clone());
        g.add_edge(&b, &a, sp(0));
        assert!(g.is_referenced(&a));
        assert!(!g.is_referenced(&b));
        assert!(!g.is_referenced(&Node::Local("c".into())));
    }

    #[test]
    fn order_puts_dependencies_first() {
        let mut g = DepGraph::default();
        let inst = Node::Resource(Kind::Instance, "web".into());
        let disk = Node::Resource(Kind::Disk, "root".into());
        let img = Node::Resource(Kind::Image, "base".into());
        g.add_edge(&inst, &disk, sp(1));
        g.add_edge(&disk, &img, sp(2));
        let order: Vec<String> = g.order().iter().map(|n| n.to_string()).collect();
        assert_eq!(order, vec!["image.base", "disk.root", "instance.web"]);
    }

    #[test]
    fn cycles_name_every_member_and_the_closing_reference() {
        let mut g = DepGraph::default();
        let a = Node::Resource(Kind::Port, "a".into());
        let b = Node::Local("b".into());
        let c = Node::Resource(Kind::Instance, "c".into());
        g.add_edge(&a, &b, sp(1));
        g.add_edge(&b, &c, sp(2));
        g.add_edge(&c, &a, sp(3));
        let d = g.cycles();
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("instance.c -> port.a -> local.b -> instance.c"), "{}", d[0].message);
        assert_eq!(d[0].span, Some(sp(2)));
        assert_eq!(d[0].notes.len(), 2);
    }

    #[test]
    fn self_reference_is_a_cycle() {
        let mut g = DepGraph::default();
        let a = Node::Local("a".into());
        g.add_edge(&a, &a, sp(1));
        assert_eq!(g.cycles().len(), 1);
    }

    #[test]
    fn dot_collapses_locals() {
        let mut g = DepGraph::default();
        let p = Node::Resource(Kind::Port, "p".into());
        let l = Node::Local("net".into());
        let n = Node::Resource(Kind::Network, "lan".into());
        g.add_edge(&p, &l, sp(1));
        g.add_edge(&l, &n, sp(2));
        let dot = g.to_dot();
        assert!(dot.contains("\"port.p\" -> \"network.lan\";"), "{dot}");
        assert!(!dot.contains("local.net"));
    }
}
