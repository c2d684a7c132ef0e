//! Building blocks of graft's self-contained HTML pages: escaping and the page shell
//! ([`html`]), SVG charts drawn with plotters ([`charts`]). The reports (`crate::report`) and
//! each task's report sections assemble pages from them.

pub mod charts;
pub mod html;

pub use html::Page;
