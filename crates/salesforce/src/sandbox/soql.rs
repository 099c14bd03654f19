//! The slice of SOQL the fake understands:
//! `SELECT f, ... FROM Contact [WHERE Id IN ('..', ..) | WHERE Id = '..'] [ORDER BY Id [ASC]] [LIMIT n]`.
//! Records always come in Id order, which is what `ORDER BY Id` asks for.

use super::ids::resolve;
use super::org::{SfError, is_contact_field};

/// A parsed Contact query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub fields: Vec<String>,
    /// `None`: every record. Ids in their 18-character form, whichever form the query used.
    pub ids: Option<Vec<String>>,
    pub limit: Option<usize>,
}

impl Query {
    pub fn matches_id(&self, id: &str) -> bool {
        self.ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|wanted| wanted == id))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Symbol(char),
}

/// Parses `soql`, refusing what Salesforce would refuse with its codes.
pub fn parse(soql: &str) -> Result<Query, SfError> {
    let malformed = |detail: &str| {
        SfError::new(
            "MALFORMED_QUERY",
            format!("\n{soql}\n^\nERROR at Row:1:Column:1\n{detail}"),
            &[],
        )
    };
    let tokens = tokenize(soql).ok_or_else(|| malformed("unexpected token"))?;
    let mut tokens = tokens.into_iter().peekable();
    if !keyword(&mut tokens, "SELECT") {
        return Err(malformed("expecting SELECT"));
    }
    let mut fields = Vec::new();
    loop {
        match tokens.next() {
            Some(Token::Word(field)) => fields.push(field),
            _ => return Err(malformed("expecting a field name")),
        }
        if tokens.peek() == Some(&Token::Symbol(',')) {
            tokens.next();
        } else {
            break;
        }
    }
    if !keyword(&mut tokens, "FROM") {
        return Err(malformed("expecting FROM"));
    }
    match tokens.next() {
        Some(Token::Word(object)) if object.eq_ignore_ascii_case("Contact") => {}
        Some(Token::Word(object)) => {
            return Err(SfError::new(
                "INVALID_TYPE",
                format!("sObject type '{object}' is not supported."),
                &[],
            ));
        }
        _ => return Err(malformed("expecting an object name")),
    }
    if let Some(unknown) = fields.iter().find(|f| !is_contact_field(f)) {
        return Err(SfError::new(
            "INVALID_FIELD",
            format!("No such column '{unknown}' on entity 'Contact'."),
            &[],
        ));
    }
    let mut query = Query {
        fields,
        ids: None,
        limit: None,
    };
    if keyword(&mut tokens, "WHERE") {
        if !matches!(tokens.next(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("Id")) {
            return Err(malformed("only Id can be filtered here"));
        }
        let ids = match tokens.next() {
            Some(Token::Symbol('=')) => match tokens.next() {
                Some(Token::Quoted(id)) => vec![id],
                _ => return Err(malformed("expecting a quoted id")),
            },
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("IN") => {
                if tokens.next() != Some(Token::Symbol('(')) {
                    return Err(malformed("expecting ("));
                }
                let mut ids = Vec::new();
                loop {
                    match (tokens.next(), tokens.next()) {
                        (Some(Token::Quoted(id)), Some(Token::Symbol(','))) => ids.push(id),
                        (Some(Token::Quoted(id)), Some(Token::Symbol(')'))) => {
                            ids.push(id);
                            break;
                        }
                        _ => return Err(malformed("expecting quoted ids")),
                    }
                }
                ids
            }
            _ => return Err(malformed("expecting = or IN")),
        };
        // Salesforce takes either form of an id, and refuses what is no id.
        query.ids = Some(
            ids.iter()
                .map(|id| {
                    resolve(id).ok_or_else(|| {
                        SfError::new(
                            "INVALID_QUERY_FILTER_OPERATOR",
                            format!("\n{soql}\n^\nERROR at Row:1:Column:1\ninvalid ID field: {id}"),
                            &[],
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        );
    }
    if keyword(&mut tokens, "ORDER") {
        let by_id = keyword(&mut tokens, "BY") && keyword(&mut tokens, "Id");
        if !by_id {
            return Err(malformed("only ORDER BY Id is supported here"));
        }
        keyword(&mut tokens, "ASC");
    }
    if keyword(&mut tokens, "LIMIT") {
        match tokens.next() {
            Some(Token::Word(n)) => {
                query.limit = Some(n.parse().map_err(|_| malformed("expecting a number"))?)
            }
            _ => return Err(malformed("expecting a number")),
        }
    }
    match tokens.next() {
        None => Ok(query),
        Some(_) => Err(malformed("unexpected token")),
    }
}

type Tokens = std::iter::Peekable<std::vec::IntoIter<Token>>;

/// Takes the next token when it is the keyword `word` (in any case).
fn keyword(tokens: &mut Tokens, word: &str) -> bool {
    let found = matches!(tokens.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word));
    if found {
        tokens.next();
    }
    found
}

fn tokenize(soql: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = soql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if matches!(c, ',' | '(' | ')' | '=') {
            tokens.push(Token::Symbol(c));
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => text.push(chars.next()?),
                    other => text.push(other),
                }
            }
            tokens.push(Token::Quoted(text));
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let mut word = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == '.')
            {
                word.push(c);
                chars.next();
            }
            tokens.push(Token::Word(word));
        } else {
            return None;
        }
    }
    Some(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_queries_adapters_send() {
        let query = parse(
            "SELECT Id, Email, AccountId, LastModifiedDate FROM Contact WHERE Id IN \
             ('a0D30000001n7Pi', '70130000001tcyIAAQ')",
        )
        .unwrap();
        assert_eq!(
            query.fields,
            ["Id", "Email", "AccountId", "LastModifiedDate"]
        );
        assert_eq!(
            query.ids,
            Some(vec![
                "a0D30000001n7PiEAI".to_string(),
                "70130000001tcyIAAQ".to_string()
            ])
        );
        let all = parse("select Id from contact order by Id limit 5").unwrap();
        assert_eq!((all.ids, all.limit), (None, Some(5)));
    }

    #[test]
    fn refuses_what_salesforce_refuses() {
        assert_eq!(
            parse("SELECT Nope FROM Contact").unwrap_err().code,
            "INVALID_FIELD"
        );
        assert_eq!(
            parse("SELECT Id FROM Lead").unwrap_err().code,
            "INVALID_TYPE"
        );
        assert_eq!(
            parse("SELECT Id FROM Contact WHERE Id IN ('a'")
                .unwrap_err()
                .code,
            "MALFORMED_QUERY"
        );
        assert_eq!(
            parse("SELECT Id FROM Contact; DROP").unwrap_err().code,
            "MALFORMED_QUERY"
        );
        assert_eq!(
            parse("SELECT Id FROM Contact WHERE Id = '003A'")
                .unwrap_err()
                .code,
            "INVALID_QUERY_FILTER_OPERATOR"
        );
    }
}
