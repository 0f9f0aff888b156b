//! `$jsonSchema` filters, the form collection validators are usually written in.
//!
//! MongoDB implements a draft-4 JSON Schema dialect extended with `bsonType`
//! (<https://www.mongodb.com/docs/manual/reference/operator/query/jsonSchema/>). As in JSON Schema,
//! each keyword only constrains values of the types it is about: `minimum` ignores strings,
//! `minLength` ignores numbers, `properties` ignores non-documents, and so on; `bsonType`/`type`
//! are what restrict the type. Supported keywords: `bsonType`, `type`, `required`, `properties`,
//! `additionalProperties`, `patternProperties`, `minProperties`, `maxProperties`, `minimum`,
//! `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`, `enum`, `minLength`,
//! `maxLength`, `pattern`, `items`, `additionalItems`, `minItems`, `maxItems`, `uniqueItems`,
//! `allOf`, `anyOf`, `oneOf`, `not`, `dependencies`, and the annotations `title` and
//! `description`.

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::compare::{Number, compare_values};
use crate::error::QueryError;
use crate::filter::{CompiledRegex, TypeSel, bson_type_code, integral_value, type_alias};

/// A parsed `$jsonSchema`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schema {
    bson_types: Option<Vec<TypeSel>>,
    json_types: Option<Vec<String>>,
    required: Vec<String>,
    properties: Vec<(String, Schema)>,
    pattern_properties: Vec<(CompiledRegex, Schema)>,
    additional_properties: Option<Box<Additional>>,
    min_properties: Option<usize>,
    max_properties: Option<usize>,
    minimum: Option<Bson>,
    exclusive_minimum: bool,
    maximum: Option<Bson>,
    exclusive_maximum: bool,
    multiple_of: Option<f64>,
    enum_values: Option<Vec<Bson>>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<CompiledRegex>,
    items: Option<Items>,
    additional_items: Option<Box<Additional>>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    unique_items: bool,
    all_of: Vec<Schema>,
    any_of: Option<Vec<Schema>>,
    one_of: Option<Vec<Schema>>,
    not: Option<Box<Schema>>,
    dependencies: Vec<(String, Dependency)>,
}

/// `dependencies`: when a field is present, other fields must be too, or the document must
/// also satisfy a schema.
#[derive(Debug, Clone)]
enum Dependency {
    Fields(Vec<String>),
    Schema(Box<Schema>),
}

#[derive(Debug, Clone)]
enum Additional {
    Allowed(bool),
    Schema(Box<Schema>),
}

#[derive(Debug, Clone)]
enum Items {
    Each(Box<Schema>),
    Tuple(Vec<Schema>),
}

fn schema_error(message: impl Into<String>) -> QueryError {
    QueryError::failed_to_parse(message)
}

fn non_negative(keyword: &str, value: &Bson) -> Result<usize, QueryError> {
    integral_value(value)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            schema_error(format!(
                "$jsonSchema keyword '{keyword}' must be a non-negative integer, got {value}"
            ))
        })
}

fn boolean(keyword: &str, value: &Bson) -> Result<bool, QueryError> {
    value
        .as_bool()
        .ok_or_else(|| schema_error(format!("$jsonSchema keyword '{keyword}' must be a boolean")))
}

fn schema_doc<'a>(keyword: &str, value: &'a Bson) -> Result<&'a Document, QueryError> {
    value
        .as_document()
        .ok_or_else(|| schema_error(format!("$jsonSchema keyword '{keyword}' must be an object")))
}

fn schema_list(keyword: &str, value: &Bson) -> Result<Vec<Schema>, QueryError> {
    let Bson::Array(items) = value else {
        return Err(schema_error(format!(
            "$jsonSchema keyword '{keyword}' must be an array"
        )));
    };
    if items.is_empty() {
        return Err(schema_error(format!(
            "$jsonSchema keyword '{keyword}' must be a non-empty array"
        )));
    }
    items
        .iter()
        .map(|item| Schema::parse(schema_doc(keyword, item)?))
        .collect()
}

fn additional(keyword: &str, value: &Bson) -> Result<Additional, QueryError> {
    match value {
        Bson::Boolean(b) => Ok(Additional::Allowed(*b)),
        Bson::Document(d) => Ok(Additional::Schema(Box::new(Schema::parse(d)?))),
        _ => Err(schema_error(format!(
            "$jsonSchema keyword '{keyword}' must be either an object or a boolean"
        ))),
    }
}

fn string_or_strings(keyword: &str, value: &Bson) -> Result<Vec<String>, QueryError> {
    let err = || {
        schema_error(format!(
            "$jsonSchema keyword '{keyword}' must be either a string or an array of strings"
        ))
    };
    match value {
        Bson::String(s) => Ok(vec![s.clone()]),
        Bson::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(err))
            .collect(),
        _ => Err(err()),
    }
}

impl Schema {
    /// Parses a `$jsonSchema` document.
    pub(crate) fn parse(spec: &Document) -> Result<Schema, QueryError> {
        let mut s = Schema::default();
        for (keyword, value) in spec {
            match keyword.as_str() {
                "bsonType" => {
                    let names = string_or_strings(keyword, value)?;
                    let types = names
                        .iter()
                        .map(|n| type_alias(n).ok_or_else(|| schema_error(format!("Unknown type name alias: {n}"))))
                        .collect::<Result<_, _>>()?;
                    s.bson_types = Some(types);
                }
                "type" => {
                    let names = string_or_strings(keyword, value)?;
                    for n in &names {
                        if !matches!(
                            n.as_str(),
                            "object" | "array" | "number" | "boolean" | "string" | "null"
                        ) {
                            return Err(schema_error(format!("Unknown type name alias: {n}")));
                        }
                    }
                    s.json_types = Some(names);
                }
                "required" => {
                    let names = string_or_strings(keyword, value)?;
                    if names.is_empty() {
                        return Err(schema_error("$jsonSchema keyword 'required' cannot be an empty array"));
                    }
                    s.required = names;
                }
                "properties" => {
                    for (name, sub) in schema_doc(keyword, value)? {
                        s.properties
                            .push((name.clone(), Schema::parse(schema_doc(name, sub)?)?));
                    }
                }
                "patternProperties" => {
                    for (pattern, sub) in schema_doc(keyword, value)? {
                        s.pattern_properties.push((
                            CompiledRegex::new(pattern, "")?,
                            Schema::parse(schema_doc(pattern, sub)?)?,
                        ));
                    }
                }
                "additionalProperties" => s.additional_properties = Some(Box::new(additional(keyword, value)?)),
                "minProperties" => s.min_properties = Some(non_negative(keyword, value)?),
                "maxProperties" => s.max_properties = Some(non_negative(keyword, value)?),
                "minimum" | "maximum" => {
                    if Number::of(value).is_none() {
                        return Err(schema_error(format!(
                            "$jsonSchema keyword '{keyword}' must be a number"
                        )));
                    }
                    if keyword == "minimum" {
                        s.minimum = Some(value.clone());
                    } else {
                        s.maximum = Some(value.clone());
                    }
                }
                "exclusiveMinimum" => s.exclusive_minimum = boolean(keyword, value)?,
                "exclusiveMaximum" => s.exclusive_maximum = boolean(keyword, value)?,
                "multipleOf" => {
                    let m = value
                        .as_f64()
                        .or_else(|| integral_value(value).map(|i| i as f64))
                        .filter(|m| *m > 0.0);
                    s.multiple_of =
                        Some(m.ok_or_else(|| {
                            schema_error("$jsonSchema keyword 'multipleOf' must be a positive number")
                        })?);
                }
                "enum" => match value {
                    Bson::Array(items) if !items.is_empty() => s.enum_values = Some(items.clone()),
                    _ => return Err(schema_error("$jsonSchema keyword 'enum' must be a non-empty array")),
                },
                "minLength" => s.min_length = Some(non_negative(keyword, value)?),
                "maxLength" => s.max_length = Some(non_negative(keyword, value)?),
                "pattern" => match value {
                    Bson::String(p) => s.pattern = Some(CompiledRegex::new(p, "")?),
                    _ => return Err(schema_error("$jsonSchema keyword 'pattern' must be a string")),
                },
                "items" => {
                    s.items = Some(match value {
                        Bson::Document(d) => Items::Each(Box::new(Schema::parse(d)?)),
                        Bson::Array(_) => Items::Tuple(schema_list(keyword, value)?),
                        _ => {
                            return Err(schema_error(
                                "$jsonSchema keyword 'items' must be an array or an object",
                            ));
                        }
                    });
                }
                "additionalItems" => s.additional_items = Some(Box::new(additional(keyword, value)?)),
                "minItems" => s.min_items = Some(non_negative(keyword, value)?),
                "maxItems" => s.max_items = Some(non_negative(keyword, value)?),
                "uniqueItems" => s.unique_items = boolean(keyword, value)?,
                "allOf" => s.all_of = schema_list(keyword, value)?,
                "anyOf" => s.any_of = Some(schema_list(keyword, value)?),
                "oneOf" => s.one_of = Some(schema_list(keyword, value)?),
                "not" => s.not = Some(Box::new(Schema::parse(schema_doc(keyword, value)?)?)),
                "dependencies" => {
                    for (field, dependency) in schema_doc(keyword, value)? {
                        let dependency = match dependency {
                            Bson::Document(d) => Dependency::Schema(Box::new(Schema::parse(d)?)),
                            Bson::Array(_) => Dependency::Fields(string_or_strings(keyword, dependency)?),
                            _ => {
                                return Err(schema_error(format!(
                                    "Expected dependency '{field}' of $jsonSchema keyword 'dependencies' to be an object or an array of strings"
                                )));
                            }
                        };
                        s.dependencies.push((field.clone(), dependency));
                    }
                }
                "title" | "description" => {
                    if !matches!(value, Bson::String(_)) {
                        return Err(schema_error(format!(
                            "$jsonSchema keyword '{keyword}' must be a string"
                        )));
                    }
                }
                other => return Err(schema_error(format!("Unknown $jsonSchema keyword: {other}"))),
            }
        }
        if s.exclusive_minimum && s.minimum.is_none() {
            return Err(schema_error(
                "$jsonSchema keyword 'minimum' must be a present if exclusiveMinimum is present",
            ));
        }
        if s.exclusive_maximum && s.maximum.is_none() {
            return Err(schema_error(
                "$jsonSchema keyword 'maximum' must be a present if exclusiveMaximum is present",
            ));
        }
        Ok(s)
    }

    /// Whether a top-level document satisfies the schema.
    pub(crate) fn matches(&self, doc: &Document) -> bool {
        self.check_type_of_document() && self.check_common(&Bson::Null, Some(doc))
    }

    fn check_type_of_document(&self) -> bool {
        let bson_ok = self.bson_types.as_ref().is_none_or(|t| t.contains(&TypeSel::Code(3)));
        let json_ok = self.json_types.as_ref().is_none_or(|t| t.iter().any(|n| n == "object"));
        bson_ok && json_ok
    }

    fn matches_value(&self, value: &Bson) -> bool {
        if let Some(types) = &self.bson_types {
            let ok = types.iter().any(|t| match t {
                TypeSel::Number => Number::of(value).is_some(),
                TypeSel::Code(c) => bson_type_code(value) == *c,
            });
            if !ok {
                return false;
            }
        }
        if let Some(types) = &self.json_types {
            let ok = types.iter().any(|t| match t.as_str() {
                "object" => matches!(value, Bson::Document(_)),
                "array" => matches!(value, Bson::Array(_)),
                "number" => Number::of(value).is_some(),
                "boolean" => matches!(value, Bson::Boolean(_)),
                "string" => matches!(value, Bson::String(_)),
                "null" => matches!(value, Bson::Null),
                _ => false,
            });
            if !ok {
                return false;
            }
        }
        match value {
            Bson::Document(d) => self.check_common(value, Some(d)),
            _ => self.check_common(value, None),
        }
    }

    /// Every keyword except the type keywords; `doc` is set when the value is a document.
    fn check_common(&self, value: &Bson, doc: Option<&Document>) -> bool {
        if let Some(d) = doc
            && !self.check_document(d)
        {
            return false;
        }
        if Number::of(value).is_some() {
            if let Some(min) = &self.minimum {
                let ord = compare_values(value, min);
                if ord == Ordering::Less || (self.exclusive_minimum && ord == Ordering::Equal) {
                    return false;
                }
            }
            if let Some(max) = &self.maximum {
                let ord = compare_values(value, max);
                if ord == Ordering::Greater || (self.exclusive_maximum && ord == Ordering::Equal) {
                    return false;
                }
            }
            if let Some(m) = self.multiple_of {
                let v = value
                    .as_f64()
                    .or_else(|| integral_value(value).map(|i| i as f64))
                    .unwrap_or(f64::NAN);
                if !(v / m).is_finite() || (v / m).fract() != 0.0 {
                    return false;
                }
            }
        }
        if let Some(values) = &self.enum_values {
            let whole = match doc {
                Some(d) => Bson::Document(d.clone()),
                None => value.clone(),
            };
            if !values.iter().any(|v| compare_values(v, &whole) == Ordering::Equal) {
                return false;
            }
        }
        if let Bson::String(s) = value {
            let len = s.chars().count();
            if self.min_length.is_some_and(|m| len < m) || self.max_length.is_some_and(|m| len > m) {
                return false;
            }
            if self.pattern.as_ref().is_some_and(|p| !p.is_match(s)) {
                return false;
            }
        }
        if let Bson::Array(items) = value
            && !self.check_array(items)
        {
            return false;
        }
        let subject = |schema: &Schema| match doc {
            Some(d) => schema.check_type_of_document() && schema.check_common(value, Some(d)),
            None => schema.matches_value(value),
        };
        if !self.all_of.iter().all(subject) {
            return false;
        }
        if self.any_of.as_ref().is_some_and(|list| !list.iter().any(subject)) {
            return false;
        }
        if self
            .one_of
            .as_ref()
            .is_some_and(|list| list.iter().filter(|s| subject(s)).count() != 1)
        {
            return false;
        }
        if self.not.as_ref().is_some_and(|n| subject(n)) {
            return false;
        }
        true
    }

    fn check_document(&self, doc: &Document) -> bool {
        if !self.required.iter().all(|f| doc.contains_key(f)) {
            return false;
        }
        for (field, dependency) in &self.dependencies {
            if doc.contains_key(field) {
                let ok = match dependency {
                    Dependency::Fields(fields) => fields.iter().all(|f| doc.contains_key(f)),
                    Dependency::Schema(schema) => {
                        schema.check_type_of_document() && schema.check_common(&Bson::Null, Some(doc))
                    }
                };
                if !ok {
                    return false;
                }
            }
        }
        let len = doc.len();
        if self.min_properties.is_some_and(|m| len < m) || self.max_properties.is_some_and(|m| len > m) {
            return false;
        }
        for (name, value) in doc {
            let mut covered = false;
            if let Some((_, schema)) = self.properties.iter().find(|(n, _)| n == name) {
                covered = true;
                if !schema.matches_value(value) {
                    return false;
                }
            }
            for (pattern, schema) in &self.pattern_properties {
                if pattern.is_match(name) {
                    covered = true;
                    if !schema.matches_value(value) {
                        return false;
                    }
                }
            }
            if !covered {
                match self.additional_properties.as_deref() {
                    Some(Additional::Allowed(false)) => return false,
                    Some(Additional::Schema(schema)) if !schema.matches_value(value) => return false,
                    _ => {}
                }
            }
        }
        true
    }

    fn check_array(&self, items: &[Bson]) -> bool {
        if self.min_items.is_some_and(|m| items.len() < m) || self.max_items.is_some_and(|m| items.len() > m) {
            return false;
        }
        if self.unique_items {
            for (i, a) in items.iter().enumerate() {
                if items[i + 1..].iter().any(|b| compare_values(a, b) == Ordering::Equal) {
                    return false;
                }
            }
        }
        match &self.items {
            Some(Items::Each(schema)) => items.iter().all(|i| schema.matches_value(i)),
            Some(Items::Tuple(schemas)) => {
                let positional = items.iter().zip(schemas.iter()).all(|(i, s)| s.matches_value(i));
                let rest = items.get(schemas.len()..).unwrap_or(&[]);
                positional
                    && match self.additional_items.as_deref() {
                        Some(Additional::Allowed(false)) => rest.is_empty(),
                        Some(Additional::Schema(s)) => rest.iter().all(|i| s.matches_value(i)),
                        _ => true,
                    }
            }
            None => true,
        }
    }
}
