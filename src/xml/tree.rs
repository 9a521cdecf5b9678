//! A small element tree read with quick-xml's namespace-aware reader.
//!
//! libvirt documents are small (a few KiB), so reading them into a tree and
//! then picking the managed fields is simpler and safer than a streaming state
//! machine. Text is unescaped (predefined entities and character references),
//! attribute values are normalized as XML requires. Element and attribute
//! names keep their namespace URI, so the virtform marker is matched by URI
//! whatever prefix libvirt re-serializes it with.
//!
//! The tree is one arena per document ([`Doc`]): elements, attributes and
//! text borrow the input wherever it needs no unescaping, and an element is
//! a copyable handle ([`Elem`]) into the arena. Reading 1,000 domain
//! definitions was a third of virtform's CPU in a converged plan when every
//! element owned its name, path, text and attributes (44 µs per definition,
//! half of it malloc/free); element paths for error messages are now computed
//! only when an error needs one.

use super::XmlError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::borrow::Cow;
use std::str::FromStr;

/// Deeper than any libvirt document; bounds recursion on hostile input.
const MAX_DEPTH: usize = 64;
const NONE: u32 = u32::MAX;

/// A parsed document: every element, attribute and text of it.
#[derive(Debug)]
pub struct Doc<'a> {
    nodes: Vec<Node<'a>>,
    attrs: Vec<AttrRec<'a>>,
    /// Namespace URIs, interned (a document has a handful).
    uris: Vec<String>,
}

#[derive(Debug)]
struct Node<'a> {
    ns: Option<u32>,
    name: Cow<'a, str>,
    parent: u32,
    first_child: u32,
    last_child: u32,
    next_sibling: u32,
    attrs: (u32, u32),
    /// All character data directly inside this element, unescaped.
    text: Cow<'a, str>,
}

#[derive(Debug)]
struct AttrRec<'a> {
    ns: Option<u32>,
    name: Cow<'a, str>,
    value: Cow<'a, str>,
}

/// One attribute: namespace URI (None for unprefixed ones), local name, value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'d> {
    pub ns: Option<&'d str>,
    pub name: &'d str,
    pub value: &'d str,
}

/// One element of a [`Doc`]: namespace URI, local name, attributes, text,
/// child elements, and a path for error messages
/// (`domain/devices/disk[2]/target`).
#[derive(Clone, Copy)]
pub struct Elem<'d> {
    doc: &'d Doc<'d>,
    i: u32,
}

impl std::fmt::Debug for Elem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.path())
    }
}

/// `s` as a slice of `input` when it points into it (quick-xml hands out
/// borrowed slices of a `&str` input whenever nothing had to be unescaped).
fn rebase<'a>(input: &'a str, s: Cow<'_, str>) -> Cow<'a, str> {
    if let Cow::Borrowed(b) = s {
        let (base, p) = (input.as_ptr() as usize, b.as_ptr() as usize);
        if p >= base && p + b.len() <= base + input.len() {
            // A &str sub-slice of a &str starts and ends on char boundaries.
            if let Some(r) = input.get(p - base..p - base + b.len()) {
                return Cow::Borrowed(r);
            }
        }
        return Cow::Owned(b.to_owned());
    }
    Cow::Owned(s.into_owned())
}

/// The last `len` bytes of `s` (a suffix `s` was split into), borrowed
/// from the input when `s` is.
fn tail<'a>(s: &Cow<'a, str>, len: usize) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[b.len() - len..]),
        Cow::Owned(o) => Cow::Owned(o[o.len() - len..].to_string()),
    }
}

struct Builder<'a> {
    input: &'a str,
    doc: Doc<'a>,
    /// Indices of the open elements.
    stack: Vec<u32>,
    root: Option<u32>,
    /// Namespace declarations in scope, innermost last.
    bindings: Vec<Binding<'a>>,
    /// The attributes of the element being opened (qualified name, value).
    scratch: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// `xmlns="…"` (prefix None) or `xmlns:p="…"` declared on the element at
/// nesting level `level`; `uri` None undeclares the default namespace.
struct Binding<'a> {
    level: usize,
    prefix: Option<Cow<'a, str>>,
    uri: Option<u32>,
}

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";
/// More namespace declarations in scope than any real document has.
const MAX_BINDINGS: usize = 1024;

impl<'a> Doc<'a> {
    /// Parses a whole document; its root element must be `expected_root`
    /// (without a namespace).
    pub fn parse(xml: &'a str, expected_root: &'static str) -> Result<Doc<'a>, XmlError> {
        Doc::parse_skipping(xml, expected_root, &[])
    }

    /// [`parse`](Self::parse), leaving out every element below the root
    /// whose (unprefixed) name is in `skip`, with everything inside it: such
    /// a subtree is only scanned for its end tag (its attributes are neither
    /// read nor checked). For readers that never look at those elements
    /// (`<address>`, `<controller>`, … in a domain: a third of its elements).
    pub fn parse_skipping(xml: &'a str, expected_root: &'static str, skip: &[&str]) -> Result<Doc<'a>, XmlError> {
        // A plain reader: namespaces are resolved here, only for the
        // elements kept (quick-xml's NsReader scanned every start tag for
        // declarations, an eighth of the cost of reading a domain).
        let mut reader = Reader::from_str(xml);
        // Typical libvirt domain: ~50 elements, ~60 attributes.
        let est = xml.len() / 48 + 4;
        let mut b = Builder {
            input: xml,
            doc: Doc { nodes: Vec::with_capacity(est), attrs: Vec::with_capacity(est), uris: Vec::new() },
            stack: Vec::with_capacity(16),
            root: None,
            bindings: Vec::new(),
            scratch: Vec::with_capacity(8),
        };
        loop {
            let syntax = |reader: &Reader<&[u8]>, e: quick_xml::Error| XmlError::Syntax { position: reader.error_position(), message: e.to_string() };
            let event = match reader.read_event() {
                Ok(ev) => ev,
                Err(e) => return Err(syntax(&reader, e)),
            };
            match event {
                Event::Start(start) if !b.stack.is_empty() && skip.contains(&start.name().as_ref()) => {
                    if let Err(e) = reader.read_to_end(start.name()) {
                        return Err(syntax(&reader, e));
                    }
                }
                Event::Empty(start) if !b.stack.is_empty() && skip.contains(&start.name().as_ref()) => {}
                Event::Start(start) => {
                    let i = b.open(&reader, &start)?;
                    b.stack.push(i);
                    if b.stack.len() > MAX_DEPTH {
                        return Err(XmlError::TooDeep { element: b.doc.elem(i).path(), limit: MAX_DEPTH });
                    }
                }
                Event::Empty(start) => {
                    b.open(&reader, &start)?;
                    b.close_scope(b.stack.len());
                }
                Event::End(_) => {
                    // check_end_names (on by default) guarantees the names match.
                    if b.stack.pop().is_none() {
                        return Err(XmlError::Syntax { position: reader.buffer_position(), message: "closing tag without an opening one".into() });
                    }
                    b.close_scope(b.stack.len());
                }
                Event::Text(t) => {
                    if !b.ignorable(&t) {
                        let s = rebase(xml, t.xml10_content());
                        b.push_text(s, &reader)?
                    }
                }
                Event::CData(t) => {
                    let s = rebase(xml, t.xml10_content());
                    b.push_text(s, &reader)?
                }
                Event::GeneralRef(r) => {
                    let s: String = if r.is_char_ref() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => return Err(XmlError::Syntax { position: reader.buffer_position(), message: format!("invalid character reference &{};", &*r) }),
                        }
                    } else {
                        match quick_xml::escape::resolve_predefined_entity(&r) {
                            Some(s) => s.to_string(),
                            None => return Err(XmlError::Syntax { position: reader.buffer_position(), message: format!("unknown entity &{};", &*r) }),
                        }
                    };
                    b.push_text(Cow::Owned(s), &reader)?;
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(&open) = b.stack.last() {
            return Err(XmlError::Syntax { position: reader.buffer_position(), message: format!("the document ends inside <{}>", b.doc.elem(open).path()) });
        }
        let root = b.root.ok_or(XmlError::Empty { expected: expected_root })?;
        let r = &b.doc.nodes[root as usize];
        if r.name != expected_root || r.ns.is_some() {
            return Err(XmlError::UnexpectedRoot { expected: expected_root, found: r.name.to_string() });
        }
        Ok(b.doc)
    }

    /// The root element.
    pub fn root(&self) -> Elem<'_> {
        // Parse guarantees a root, and it is the first element read.
        Elem { doc: self, i: 0 }
    }

    fn elem(&self, i: u32) -> Elem<'_> {
        Elem { doc: self, i }
    }
}

fn is_xml_space(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

impl<'a> Builder<'a> {
    fn intern(&mut self, uri: &str) -> u32 {
        if let Some(i) = self.doc.uris.iter().position(|u| u == uri) {
            return i as u32;
        }
        self.doc.uris.push(uri.to_owned());
        (self.doc.uris.len() - 1) as u32
    }

    /// Ends the namespace declarations of the element at `level`.
    fn close_scope(&mut self, level: usize) {
        while self.bindings.last().is_some_and(|b| b.level >= level) {
            self.bindings.pop();
        }
    }

    /// The namespace of a prefix (None: of an unprefixed element name).
    /// An undeclared prefix gets a namespace of its own that never matches
    /// one of libvirt's or ours, so such an element is never mistaken for one.
    fn resolve(&mut self, prefix: Option<&str>) -> Option<u32> {
        match prefix {
            Some("xml") => Some(self.intern(XML_NS)),
            Some(p) => match self.bindings.iter().rev().find(|b| b.prefix.as_deref() == Some(p)) {
                Some(b) => b.uri,
                None => Some(self.intern(&format!("unknown-prefix:{p}"))),
            },
            None => self.bindings.iter().rev().find(|b| b.prefix.is_none()).and_then(|b| b.uri),
        }
    }

    /// Whitespace between child elements is formatting, not text: dropped
    /// (and not even unescaped). Whitespace in an element without child
    /// elements so far is kept, and dropped if a child element follows.
    fn ignorable(&self, t: &str) -> bool {
        match self.stack.last() {
            Some(&i) => self.doc.nodes[i as usize].first_child != NONE && is_xml_space(t),
            None => is_xml_space(t),
        }
    }

    /// Adds an element (and its attributes) under the innermost open one.
    fn open(&mut self, reader: &Reader<&'a [u8]>, start: &BytesStart<'_>) -> Result<u32, XmlError> {
        let position = reader.buffer_position();
        if self.stack.is_empty() && self.root.is_some() {
            return Err(XmlError::Syntax { position, message: "more than one root element".into() });
        }
        let level = self.stack.len();
        let qname = rebase(self.input, Cow::Borrowed(start.name().as_ref()));
        let i = self.doc.nodes.len() as u32;
        let parent = self.stack.last().copied().unwrap_or(NONE);
        let first_attr = self.doc.attrs.len() as u32;
        // The path for messages needs the node in place (its name and
        // parent); namespace and local name are filled in below.
        self.doc.nodes.push(Node { ns: None, name: qname.clone(), parent, first_child: NONE, last_child: NONE, next_sibling: NONE, attrs: (first_attr, first_attr), text: Cow::Borrowed("") });
        if parent == NONE {
            self.root = Some(i);
        } else {
            let p = &mut self.doc.nodes[parent as usize];
            // Whitespace before the first child element was formatting.
            if p.first_child == NONE && is_xml_space(&p.text) {
                p.text = Cow::Borrowed("");
            }
            let prev = p.last_child;
            p.last_child = i;
            if prev == NONE {
                p.first_child = i;
            } else {
                self.doc.nodes[prev as usize].next_sibling = i;
            }
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let mut attrs = start.attributes();
        // Duplicates are checked below on expanded names (stricter, and
        // without quick-xml's per-element allocation).
        attrs.with_checks(false);
        for a in attrs {
            let a = a.map_err(|e| XmlError::Syntax { position, message: format!("in <{}>: {e}", self.doc.elem(i).path()) })?;
            let key = rebase(self.input, Cow::Borrowed(a.key.as_ref()));
            let value = match a.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
                Ok(v) => rebase(self.input, v),
                Err(e) => return Err(XmlError::Syntax { position, message: format!("in attribute `{key}` of <{}>: {e}", self.doc.elem(i).path()) }),
            };
            scratch.push((key, value));
        }
        // Declarations first: they apply to the element's own name and attributes.
        for (key, value) in &scratch {
            let prefix = match key.as_ref() {
                "xmlns" => None,
                k => match k.strip_prefix("xmlns:") {
                    Some(p) => Some(p),
                    None => continue,
                },
            };
            let bad = |b: &Self, m: String| XmlError::Syntax { position, message: format!("in <{}>: {m}", b.doc.elem(i).path()) };
            let uri = match (prefix, value.as_ref()) {
                (Some("xmlns"), _) => return Err(bad(self, "the prefix `xmlns` cannot be declared".into())),
                (Some("xml"), v) if v != XML_NS => return Err(bad(self, format!("the prefix `xml` cannot be bound to {v:?}"))),
                (Some(p), v) if p != "xml" && (v == XML_NS || v == XMLNS_NS) => return Err(bad(self, format!("the prefix `{p}` cannot be bound to {v:?}"))),
                (Some(p), "") => return Err(bad(self, format!("the prefix `{p}` cannot be undeclared"))),
                (None, v) if v == XML_NS || v == XMLNS_NS => return Err(bad(self, format!("the default namespace cannot be {v:?}"))),
                (None, "") => None,
                (_, v) => Some(self.intern(v)),
            };
            if self.bindings.len() >= MAX_BINDINGS {
                return Err(bad(self, format!("more than {MAX_BINDINGS} namespace declarations in scope")));
            }
            self.bindings.push(Binding { level, prefix: prefix.map(|p| tail(key, p.len())), uri });
        }
        let (prefix, local) = match qname.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, qname.as_ref()),
        };
        let ns = self.resolve(prefix);
        let name = tail(&qname, local.len());
        let node = &mut self.doc.nodes[i as usize];
        node.ns = ns;
        node.name = name;
        for (key, value) in scratch.drain(..) {
            if key == "xmlns" || key.starts_with("xmlns:") {
                continue;
            }
            let (ans, aname) = match key.split_once(':') {
                Some((p, l)) => (self.resolve(Some(p)), tail(&key, l.len())),
                None => (None, key),
            };
            let (lo, hi) = (first_attr as usize, self.doc.attrs.len());
            if self.doc.attrs[lo..hi].iter().any(|x| x.ns == ans && x.name == aname) {
                return Err(XmlError::Syntax { position, message: format!("in <{}>: duplicate attribute `{aname}`", self.doc.elem(i).path()) });
            }
            self.doc.attrs.push(AttrRec { ns: ans, name: aname, value });
        }
        self.scratch = scratch;
        self.doc.nodes[i as usize].attrs = (first_attr, self.doc.attrs.len() as u32);
        Ok(i)
    }

    fn push_text(&mut self, s: Cow<'a, str>, reader: &Reader<&[u8]>) -> Result<(), XmlError> {
        match self.stack.last() {
            Some(&i) => {
                let t = &mut self.doc.nodes[i as usize].text;
                if t.is_empty() {
                    *t = s;
                } else {
                    t.to_mut().push_str(&s);
                }
                Ok(())
            }
            None if is_xml_space(&s) => Ok(()),
            None => Err(XmlError::Syntax { position: reader.buffer_position(), message: "text outside the root element".into() }),
        }
    }
}

impl<'d> Elem<'d> {
    fn node(self) -> &'d Node<'d> {
        &self.doc.nodes[self.i as usize]
    }

    /// The local name.
    pub fn name(self) -> &'d str {
        &self.node().name
    }

    /// The namespace URI, None for an element without one.
    pub fn ns(self) -> Option<&'d str> {
        self.node().ns.map(|n| self.doc.uris[n as usize].as_str())
    }

    /// All character data directly inside this element, unescaped.
    pub fn text(self) -> &'d str {
        &self.node().text
    }

    /// Where the element is, for messages: `domain/devices/disk[2]/target`
    /// (the index counts earlier siblings of the same name, from 1).
    pub fn path(self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = self;
        loop {
            let n = cur.node();
            if n.parent == NONE {
                parts.push(n.name.to_string());
                break;
            }
            let parent = Elem { doc: self.doc, i: n.parent };
            let same = parent.elements().take_while(|c| c.i != cur.i).filter(|c| c.name() == n.name).count();
            parts.push(if same > 0 { format!("{}[{}]", n.name, same + 1) } else { n.name.to_string() });
            cur = parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// All child elements, in document order.
    pub fn elements(self) -> impl Iterator<Item = Elem<'d>> + 'd {
        let doc = self.doc;
        let mut next = self.node().first_child;
        std::iter::from_fn(move || {
            if next == NONE {
                return None;
            }
            let e = Elem { doc, i: next };
            next = e.node().next_sibling;
            Some(e)
        })
    }

    /// All attributes, in document order (namespace declarations excluded).
    pub fn attrs(self) -> impl Iterator<Item = Attr<'d>> + 'd {
        let doc = self.doc;
        let (lo, hi) = self.node().attrs;
        doc.attrs[lo as usize..hi as usize].iter().map(move |a| Attr { ns: a.ns.map(|n| doc.uris[n as usize].as_str()), name: &a.name, value: &a.value })
    }

    /// The first child element without a namespace named `name`.
    pub fn child(self, name: &str) -> Option<Elem<'d>> {
        self.elements().find(|c| c.node().ns.is_none() && c.name() == name)
    }

    /// All child elements without a namespace named `name`.
    pub fn children<'n>(self, name: &'n str) -> impl Iterator<Item = Elem<'d>> + 'n
    where
        'd: 'n,
    {
        self.elements().filter(move |c| c.node().ns.is_none() && c.name() == name)
    }

    /// The first child element named `name` whose namespace URI is `ns`.
    pub fn ns_child(self, ns: &str, name: &str) -> Option<Elem<'d>> {
        self.elements().find(|c| c.ns() == Some(ns) && c.name() == name)
    }

    /// A required child.
    pub fn req_child(self, name: &'static str) -> Result<Elem<'d>, XmlError> {
        self.child(name).ok_or_else(|| XmlError::MissingElement { parent: self.path(), element: name })
    }

    /// An unprefixed attribute.
    pub fn attr(self, name: &str) -> Option<&'d str> {
        self.attrs().find(|a| a.ns.is_none() && a.name == name).map(|a| a.value)
    }

    /// An attribute in namespace `ns`.
    pub fn ns_attr(self, ns: &str, name: &str) -> Option<&'d str> {
        self.attrs().find(|a| a.ns == Some(ns) && a.name == name).map(|a| a.value)
    }

    /// A required unprefixed attribute.
    pub fn req_attr(self, name: &'static str) -> Result<&'d str, XmlError> {
        self.attr(name).ok_or_else(|| XmlError::MissingAttribute { element: self.path(), attribute: name })
    }

    /// An attribute parsed with `FromStr` (surrounding whitespace ignored).
    pub fn attr_parse<T: FromStr>(self, name: &str, expected: &str) -> Result<Option<T>, XmlError> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| XmlError::invalid(self, Some(name), v, expected)),
        }
    }

    /// The element's text parsed with `FromStr` (surrounding whitespace ignored).
    pub fn text_parse<T: FromStr>(self, expected: &str) -> Result<T, XmlError> {
        self.text().trim().parse().map_err(|_| XmlError::invalid(self, None, self.text(), expected))
    }

    /// The element's text, or None when it is empty.
    pub fn text_opt(self) -> Option<String> {
        let t = self.text();
        if t.is_empty() { None } else { Some(t.to_string()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_namespaces_text_and_entities() {
        let xml = r#"<?xml version="1.0"?>
<!-- comment -->
<domain type='qemu'>
  <name>a &amp; b &lt;c&gt; &#10;&#x41;<![CDATA[<raw>]]></name>
  <metadata>
    <vf:instance xmlns:vf="https://virtform.dev/xmlns/virtform/1" stack="s&apos;" vf:address="x"/>
    <other:instance xmlns:other="urn:other" stack="nope"/>
  </metadata>
  <devices><disk/><disk><target dev="vdb"/></disk></devices>
</domain>"#;
        let doc = Doc::parse(xml, "domain").unwrap();
        let root = doc.root();
        assert_eq!(root.attr("type"), Some("qemu"));
        assert_eq!(root.child("name").unwrap().text(), "a & b <c> \nA<raw>");
        let md = root.child("metadata").unwrap();
        let m = md.ns_child(crate::xml::NS, "instance").unwrap();
        assert_eq!(m.attr("stack"), Some("s'"));
        assert_eq!(m.attr("address"), None, "a prefixed attribute is not an unprefixed one");
        assert!(md.child("instance").is_none());
        let disks: Vec<_> = root.child("devices").unwrap().children("disk").collect();
        assert_eq!(disks[1].child("target").unwrap().path(), "domain/devices/disk[2]/target");
    }

    #[test]
    fn namespaces_are_scoped_like_xml_says() {
        let xml = r#"<domain xmlns:a="urn:a">
  <a:x a:k="1" k="2"/>
  <y xmlns="urn:d"><z/><w xmlns=""/></y>
  <v><a:u xmlns:a="urn:other"/><a:t/></v>
  <b:s/>
  <q xml:lang="en"/>
</domain>"#;
        let doc = Doc::parse(xml, "domain").unwrap();
        let root = doc.root();
        let x = root.ns_child("urn:a", "x").unwrap();
        assert_eq!((x.name(), x.ns_attr("urn:a", "k"), x.attr("k")), ("x", Some("1"), Some("2")));
        assert!(root.child("x").is_none(), "a prefixed element is not an unprefixed one");
        let y = root.ns_child("urn:d", "y").unwrap();
        assert_eq!(y.elements().next().unwrap().ns(), Some("urn:d"), "the default namespace is inherited");
        assert!(y.child("w").is_some(), "xmlns=\"\" undeclares it");
        assert!(root.child("y").is_none());
        let v = root.child("v").unwrap();
        let kids: Vec<_> = v.elements().map(|e| (e.name(), e.ns())).collect();
        assert_eq!(kids, [("u", Some("urn:other")), ("t", Some("urn:a"))], "a redeclaration ends with its element");
        let s = root.elements().find(|e| e.name() == "s").unwrap();
        assert_eq!(s.ns(), Some("unknown-prefix:b"));
        let q = root.child("q").unwrap();
        assert_eq!(q.ns_attr("http://www.w3.org/XML/1998/namespace", "lang"), Some("en"));
        assert_eq!(root.attrs().count(), 0, "declarations are not attributes");
        for bad in [
            r#"<domain xmlns:xmlns="urn:x"/>"#,
            r#"<domain xmlns:xml="urn:x"/>"#,
            r#"<domain xmlns:p="http://www.w3.org/XML/1998/namespace"/>"#,
            r#"<domain xmlns:p=""/>"#,
            r#"<domain xmlns="http://www.w3.org/2000/xmlns/"/>"#,
            r#"<domain xmlns:p="urn:x" xmlns:q="urn:x" p:a="1" q:a="2"/>"#,
        ] {
            assert!(Doc::parse(bad, "domain").is_err(), "{bad}");
        }
        assert!(matches!(Doc::parse(r#"<domain xmlns="urn:x"/>"#, "domain"), Err(XmlError::UnexpectedRoot { .. })));
    }

    #[test]
    fn formatting_whitespace_is_not_text_and_text_borrows_the_input() {
        let xml = "<domain>\n  <a> x </a>\n  <b>\n</b><c>1<d/> 2 </c><e>&lt;</e><f>p&amp;q</f>\n</domain>";
        let doc = Doc::parse(xml, "domain").unwrap();
        let root = doc.root();
        assert_eq!(root.text(), "", "whitespace between child elements");
        assert_eq!(root.child("a").unwrap().text(), " x ");
        assert_eq!(root.child("b").unwrap().text(), "\n", "whitespace of an element without children is its text");
        assert_eq!(root.child("c").unwrap().text(), "1 2 ");
        assert_eq!(root.child("e").unwrap().text(), "<");
        assert_eq!(root.child("f").unwrap().text(), "p&q");
        let t = root.child("a").unwrap().text();
        let inside = |s: &str| s.as_ptr() as usize >= xml.as_ptr() as usize && s.as_ptr() as usize + s.len() <= xml.as_ptr() as usize + xml.len();
        assert!(inside(t) && inside(root.child("a").unwrap().name()), "no copies of plain text and names");
    }

    #[test]
    fn skipped_elements_are_left_out_with_their_contents() {
        let xml = "<domain><devices><address x='&bogus;'><disk/></address><disk><address/><target dev='vda'/></disk><vf:address xmlns:vf='urn:v'/></devices></domain>";
        let doc = Doc::parse_skipping(xml, "domain", &["address"]).unwrap();
        let dev = doc.root().child("devices").unwrap();
        assert_eq!(dev.children("disk").count(), 1);
        let disk = dev.child("disk").unwrap();
        assert_eq!(disk.elements().map(|e| e.name()).collect::<Vec<_>>(), ["target"]);
        assert!(dev.ns_child("urn:v", "address").is_some(), "only unprefixed names are skipped");
        assert_eq!(disk.child("target").unwrap().path(), "domain/devices/disk/target");
        assert!(Doc::parse_skipping("<domain><address><x></address></domain>", "domain", &["address"]).is_err());
        assert!(Doc::parse_skipping("<domain><address>", "domain", &["address"]).is_err());
        assert!(Doc::parse_skipping("<address/>", "domain", &["address"]).is_err(), "never the root");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "   ",
            "<domain",
            "<domain><name>x</name>",
            "<domain></network>",
            "<domain/><domain/>",
            "text<domain/>",
            "<domain a='1' a='2'/>",
            "<domain a=1/>",
            "<domain>&bogus;</domain>",
            "<domain>&#0;</domain>",
            "<domain><x:y/></domain>",
            "\u{0}\u{1}\u{2}",
            "<<<<>>>>",
            "<domain></domain></domain>",
        ] {
            let r = Doc::parse(bad, "domain");
            // An unknown prefix is not a syntax error in quick-xml; it is kept
            // as a namespace that never matches.
            if bad == "<domain><x:y/></domain>" {
                assert!(r.is_ok());
                continue;
            }
            assert!(r.is_err(), "{bad:?} parsed: {r:?}");
        }
        let deep = "<domain>".to_string() + &"<a>".repeat(10_000) + &"</a>".repeat(10_000) + "</domain>";
        assert!(matches!(Doc::parse(&deep, "domain"), Err(XmlError::TooDeep { .. })));
        assert!(matches!(Doc::parse("<network/>", "domain"), Err(XmlError::UnexpectedRoot { .. })));
    }
}
