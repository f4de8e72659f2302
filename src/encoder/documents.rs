//! Encoding documents and queries, and fitting a collection's schema to a model.

use super::{Embedding, Encoder, TextKind};
use crate::document::Document;
use crate::error::{Error, Result};
use crate::index::colbert::Precision;
use crate::schema::{Metric, Schema};

impl Encoder {
    /// Encodes each document as a passage (`title + "\n" + text`, or the text alone when the
    /// title is empty) and sets its dense vector, and for BGE-M3 its sparse weights and ColBERT
    /// token vectors, replacing any it had. `progress` gets the number of documents done.
    pub fn encode_documents(
        &self,
        docs: &mut [Document],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let texts: Vec<String> = docs
            .iter()
            .map(|d| {
                if d.title.is_empty() {
                    d.text.clone()
                } else {
                    format!("{}\n{}", d.title, d.text)
                }
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embeddings = self.encode_with_progress(&refs, TextKind::Passage, progress)?;
        for (d, e) in docs.iter_mut().zip(embeddings) {
            let Embedding {
                dense,
                sparse,
                colbert,
                ..
            } = e;
            d.dense = Some(dense);
            d.sparse = sparse;
            d.colbert = colbert;
        }
        Ok(())
    }

    /// Adds this model's outputs to a schema: a cosine dense leg, and for BGE-M3 the sparse
    /// leg and ColBERT vectors stored at `precision`.
    pub fn schema(&self, base: Schema, precision: Precision) -> Schema {
        let mut s = base.dense(self.info.dense_dim, Metric::Cosine);
        if self.info.sparse {
            s = s.sparse();
        }
        if let Some(dim) = self.info.colbert_dim {
            s = s.colbert(dim, precision);
        }
        s
    }

    /// Checks that a collection with `schema` can store every output of this model.
    pub fn check_schema(&self, schema: &Schema) -> Result<()> {
        let info = &self.info;
        let model = info.onnx.display();
        match &schema.dense {
            Some(d) if d.dim == info.dense_dim => {}
            Some(d) => {
                return Err(Error::invalid(format!(
                    "the database's dense vectors have {} dimensions but the model {model} \
                     produces {}",
                    d.dim, info.dense_dim
                )));
            }
            None => {
                return Err(Error::invalid(
                    "the database has no dense leg; create it with the model to get one",
                ));
            }
        }
        if info.sparse && !schema.sparse {
            return Err(Error::invalid(format!(
                "the model {model} produces sparse weights but the database has no sparse leg"
            )));
        }
        match (info.colbert_dim, &schema.colbert) {
            (Some(m), Some(c)) if m != c.dim => Err(Error::invalid(format!(
                "the database's ColBERT vectors have {} dimensions but the model {model} \
                 produces {m}",
                c.dim
            ))),
            (Some(_), None) => Err(Error::invalid(format!(
                "the model {model} produces ColBERT vectors but the database stores none"
            ))),
            _ => Ok(()),
        }
    }
}
