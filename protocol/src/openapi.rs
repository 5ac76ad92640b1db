//! OpenAPI schemas of the types that serialize as text of their own form
//! (durations, byte sizes, partitions, attachment bytes); every other API
//! type derives its schema beside its definition. Only with the `openapi`
//! feature: the server builds its API document from them, the browser
//! build does without.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{RefOr, schema::SchemaFormat};

use crate::attachment::Blob;
use crate::filter::Partition;
use crate::units::{ByteSize, HumanDuration};

fn text(kinds: SchemaType, description: &str, examples: &[serde_json::Value]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(kinds)
        .description(Some(description))
        .examples(examples.iter().cloned())
        .into()
}

impl utoipa::PartialSchema for HumanDuration {
    fn schema() -> RefOr<Schema> {
        text(
            SchemaType::Type(Type::String),
            "A duration: a number and a unit (ms, s, m, h, d), several added up.",
            &["30s".into(), "1m 30s".into(), "500ms".into()],
        )
    }
}
impl utoipa::ToSchema for HumanDuration {}

impl utoipa::PartialSchema for ByteSize {
    fn schema() -> RefOr<Schema> {
        text(
            SchemaType::Array(vec![Type::String, Type::Integer]),
            "A byte size: a number of bytes, or text with a unit (B, KB, KiB, MB, MiB, GB, GiB).",
            &["256MiB".into(), 4096.into()],
        )
    }
}
impl utoipa::ToSchema for ByteSize {}

impl utoipa::PartialSchema for Partition {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("One of N parts of a run's tests: `count:K/N`, `hash:K/N` or `duration:K/N`."))
            .pattern(Some("^(count|hash|duration):[0-9]+/[0-9]+$"))
            .examples(["hash:1/3"])
            .into()
    }
}
impl utoipa::ToSchema for Partition {}

impl utoipa::PartialSchema for Blob {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("byte".into())))
            .content_encoding("base64")
            .description(Some("Bytes, base64 (standard alphabet, padded)."))
            .into()
    }
}
impl utoipa::ToSchema for Blob {}
