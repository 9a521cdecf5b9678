//! A thin wrapper over quick-xml's indenting writer: element names are our
//! constants, every attribute value and every text goes through
//! [`escape_attr`]/[`escape_text`].

use super::{escape_attr, escape_text};
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::QName;
use quick_xml::Writer;
use std::borrow::Cow;

pub(crate) struct XmlWriter {
    w: Writer<Vec<u8>>,
}

fn start_tag<'a>(name: &'a str, attrs: &[(&'a str, &str)]) -> BytesStart<'a> {
    let mut tag = BytesStart::new(name);
    for (k, v) in attrs {
        // The value is escaped here (not by quick-xml) so that newlines and
        // tabs become character references and survive a read-back.
        tag.push_attribute(Attribute { key: QName(k), value: Cow::Owned(escape_attr(v).into_owned()) });
    }
    tag
}

impl XmlWriter {
    pub fn new() -> XmlWriter {
        XmlWriter { w: Writer::new_with_indent(Vec::new(), b' ', 2) }
    }

    // Writing into a Vec<u8> cannot fail, so the io::Results below are dropped.

    /// `<name a="v">` (children follow; close with [`end`](Self::end)).
    pub fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let _ = self.w.write_event(Event::Start(start_tag(name, attrs)));
    }

    pub fn end(&mut self, name: &str) {
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
    }

    /// `<name a="v"/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let _ = self.w.write_event(Event::Empty(start_tag(name, attrs)));
    }

    /// `<name a="v">text</name>` on one line.
    pub fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        let _ = self.w.write_event(Event::Start(start_tag(name, attrs)));
        let _ = self.w.write_event(Event::Text(BytesText::from_escaped(escape_text(text))));
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
    }

    /// The document, ending in a newline.
    pub fn finish(self) -> String {
        let mut bytes = self.w.into_inner();
        bytes.push(b'\n');
        // Only &str went in, so this is UTF-8.
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}
