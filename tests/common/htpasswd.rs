//! htpasswd files as `htpasswd -B` writes them, for `auth.htpasswd` and the
//! token server's accounts.

/// A bcrypt hash of `password` with the `$2y$` prefix Apache writes; tests
/// use a low `cost` to stay quick.
pub fn bcrypt_hash(password: &str, cost: u32) -> String {
    bcrypt::hash(password, cost)
        .unwrap()
        .replacen("$2b$", "$2y$", 1)
}

/// One `user:hash` line, newline included.
pub fn entry(user: &str, password: &str, cost: u32) -> String {
    format!("{user}:{}\n", bcrypt_hash(password, cost))
}
