//! Unit tests of sealing, key files, masking and templates.

use std::collections::BTreeMap;

use super::*;

fn name(text: &str) -> SecretName {
    SecretName::new(text).expect("name")
}

fn keyring() -> Keyring {
    Keyring::parse(&Keyring::new_key_line().expect("random"), "test.key").expect("keyring")
}

#[test]
fn a_sealed_value_opens_under_its_key_and_name_only() {
    let ring = keyring();
    let value = SecretValue::new(b"hunter2-token".to_vec());
    let sealed = ring.seal(&name("billing-api"), &value).expect("seal");
    assert_eq!(sealed.key_id, ring.sealing_id());
    assert!(!sealed.sealed.contains(&crypto_hex(b"hunter2")), "stored in clear");
    assert_eq!(ring.open(&name("billing-api"), &sealed).expect("open"), value);

    let moved = ring.open(&name("other"), &sealed).expect_err("moved to another name");
    assert!(matches!(moved, KeyringError::Authentication { .. }), "{moved}");

    let mut altered = sealed.clone();
    let last = altered.sealed.pop().expect("hex");
    altered.sealed.push(if last == '0' { '1' } else { '0' });
    let err = ring.open(&name("billing-api"), &altered).expect_err("altered");
    assert!(
        err.to_string().contains("key is wrong or the stored value was altered"),
        "{err}"
    );

    let other = keyring();
    let err = other.open(&name("billing-api"), &sealed).expect_err("other key");
    assert!(
        matches!(&err, KeyringError::UnknownKey { key_id, .. } if *key_id == sealed.key_id),
        "{err}"
    );
    assert!(err.to_string().contains("not in the key file"), "{err}");
}

#[test]
fn two_seals_of_one_value_differ() {
    let ring = keyring();
    let value = SecretValue::new(b"same".to_vec());
    let a = ring.seal(&name("a"), &value).expect("seal");
    let b = ring.seal(&name("a"), &value).expect("seal");
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.sealed, b.sealed);
}

#[test]
fn rotation_keeps_old_values_readable_and_seals_with_the_first_key() {
    let old_line = Keyring::new_key_line().expect("random");
    let new_line = Keyring::new_key_line().expect("random");
    let old = Keyring::parse(&old_line, "old.key").expect("old");
    let sealed = old
        .seal(&name("token"), &SecretValue::new(b"value-1".to_vec()))
        .expect("seal");
    let both = Keyring::parse(&format!("{new_line}{old_line}"), "both.key").expect("both");
    assert_ne!(both.sealing_id(), old.sealing_id());
    assert_eq!(both.ids().len(), 2);
    assert_eq!(
        both.open(&name("token"), &sealed).expect("old value").as_bytes(),
        b"value-1"
    );
    let resealed = both
        .seal(&name("token"), &SecretValue::new(b"value-1".to_vec()))
        .expect("seal");
    assert_eq!(resealed.key_id, both.sealing_id());
}

#[test]
fn key_files_are_checked_line_by_line() {
    let not_hex = "zz".repeat(32);
    let cases = [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("abc\n", "line 1: a key is 64 hex digits"),
        (
            &format!("\n{}\n", "ab".repeat(16)),
            "line 2: a key is 32 bytes (64 hex digits), not 16",
        ),
        (&format!("{k}\n{k}\n", k = "cd".repeat(32)), "is listed twice"),
        (not_hex.as_str(), "a key is 64 hex digits"),
    ];
    for (text, expected) in cases {
        let err = Keyring::parse(text, "k").expect_err(text).to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    let ok = Keyring::parse(&format!("  {}  # main key\n", "01".repeat(32)), "k").expect("valid");
    assert_eq!(ok.ids().len(), 1);
    assert_eq!(ok.sealing_id().len(), 8);
}

#[test]
fn a_key_file_is_created_private_and_refused_when_exposed() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(KEY_FILE_NAME);
    let (first, created) = Keyring::load_or_create(&path).expect("create");
    assert!(created);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (again, created) = Keyring::load_or_create(&path).expect("load");
    assert!(!created);
    assert_eq!(first.ids(), again.ids());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Keyring::load(&path).expect_err("exposed").to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

fn masked(values: &[&str], writes: &[&str]) -> String {
    let mut masker = Masker::new(values.iter().map(|v| v.as_bytes()));
    let mut out = Vec::new();
    for write in writes {
        out.extend(masker.push(write.as_bytes()));
    }
    out.extend(masker.finish());
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn values_are_masked_whole_and_across_writes() {
    assert_eq!(masked(&["s3cr3t"], &["token=s3cr3t\n"]), "token=***\n");
    assert_eq!(
        masked(&["s3cr3t"], &["token=s3c", "r3t and s3cr3t"]),
        "token=*** and ***"
    );
    assert_eq!(masked(&["s3cr3t"], &["s", "3", "c", "r", "3", "t", "!"]), "***!");
    assert_eq!(
        masked(&["s3cr3t"], &["token=s3cr"]),
        "token=s3cr",
        "a prefix at the end is not a value"
    );
    assert_eq!(
        masked(&["abcd", "abcdef"], &["abcdefabcd"]),
        "******",
        "the longest value wins"
    );
    assert_eq!(masked(&["abc"], &["abc"]), "abc", "values under 4 bytes are not masked");
    assert_eq!(masked(&["aaaa"], &["aaaaaaaaa"]), "******a");
    assert_eq!(masked(&["pässwörd"], &["x pässw", "örd y"]), "x *** y");
    assert_eq!(masked(&[], &["nothing to hide"]), "nothing to hide");
}

#[test]
fn output_that_cannot_start_a_value_is_not_held() {
    let mut masker = Masker::new([b"s3cr3t".as_slice()]);
    assert_eq!(masker.push(b"hello "), b"hello ");
    assert_eq!(masker.push(b"wor s3"), b"wor ", "only the possible start is held");
    assert_eq!(masker.push(b"x"), b"s3x");
}

#[test]
fn every_split_of_a_value_is_masked() {
    let value = "tok-12345678";
    let text = format!("a {value} b {value}");
    for cut in 0..=text.len() {
        let (left, right) = text.split_at(cut);
        assert_eq!(masked(&[value], &[left, right]), "a *** b ***", "cut at {cut}");
    }
}

#[test]
fn whole_texts_are_masked() {
    let masker = Masker::new([b"hunter22".as_slice()]);
    assert_eq!(mask_text(&masker, "GET /q?t=hunter22 failed"), "GET /q?t=*** failed");
}

#[test]
fn templates_name_their_secrets_and_fill_them_in() {
    let text = "Bearer ${secret:billing-api} ${other} ${secret:billing-api}${secret:b2}";
    assert_eq!(references(text).expect("refs"), vec![name("billing-api"), name("b2")]);
    let values = BTreeMap::from([
        ("billing-api".to_owned(), SecretValue::new(b"T0K".to_vec())),
        ("b2".to_owned(), SecretValue::new(b"!".to_vec())),
    ]);
    assert_eq!(expand(text, &values).expect("expand"), "Bearer T0K ${other} T0K!");
    assert_eq!(references("no secrets").expect("none"), Vec::<SecretName>::new());

    let err = references("x ${secret:Bad} y").expect_err("bad name").to_string();
    assert!(err.contains("secret name \"Bad\" contains 'B'"), "{err}");
    let err = references("${secret:open").expect_err("unclosed").to_string();
    assert_eq!(err, "`${secret:` at byte 0 has no closing `}`");
    let err = expand("${secret:gone}", &values).expect_err("missing").to_string();
    assert_eq!(err, "secret gone was not given to this run");
    let binary = BTreeMap::from([("bin".to_owned(), SecretValue::new(vec![0xff, 0xfe]))]);
    assert!(matches!(
        expand("${secret:bin}", &binary),
        Err(TemplateError::NotText(_))
    ));
}

#[test]
fn a_secret_value_never_prints() {
    let value = SecretValue::new(b"hunter2".to_vec());
    assert_eq!(format!("{value:?}"), "<secret, 7 bytes>");
    let secrets = RunSecrets {
        values: BTreeMap::from([("TOKEN".to_owned(), value)]),
        used: vec![name("token")],
    };
    assert!(!format!("{secrets:?}").contains("hunter2"));
}

fn crypto_hex(bytes: &[u8]) -> String {
    crate::crypto::hex(bytes)
}
