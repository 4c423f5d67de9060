//! Foreign C libraries loaded at run time: the one way mixccl finds, opens and binds
//! a vendor library (every device runtime in `device/`, libibverbs in
//! `transport/rdma/ibv.rs`), as NCCL's `cudawrap.cc` and `ibvsymbols.cc` do.
//!
//! - [`Source`]: where a library comes from: the path its override variable names,
//!   else the first of its sonames that opens. [`Library::open`] tries them in order
//!   and keeps the library open for the life of the process.
//! - [`foreign_api!`]: declares a library's symbol table once, as a struct of typed
//!   function pointers (required entry points) and [`Optional`] ones (entry points
//!   only newer releases have, whose absence fails only the calls that need them),
//!   bound in one call.
//! - [`LoadError`]: what went wrong, naming the library, every path tried with the
//!   loader's reason, and the variable that overrides them.
//!
//! What is done with a bound function's result (each API's checked-call helper)
//! belongs to its user; this module only finds and binds.

use std::fmt;

/// Where a library is looked for.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The environment variable (or configuration setting) that names the library
    /// instead of the sonames, for messages.
    pub var: &'static str,
    /// Its value, if set: then only this path is tried.
    pub path: Option<String>,
    /// The sonames tried in order when `path` is unset.
    pub sonames: &'static [&'static str],
    /// Resolve every symbol at load (`RTLD_NOW`) rather than on first call.
    pub bind_now: bool,
}

impl Source {
    /// A library overridden by environment variable `var`, else found by `sonames`.
    pub(crate) fn from_env(var: &'static str, sonames: &'static [&'static str]) -> Source {
        let path = std::env::var(var)
            .ok()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty());
        Source {
            var,
            path,
            sonames,
            bind_now: false,
        }
    }
}

/// Why a library could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadError {
    /// No candidate opened.
    NotFound {
        /// Each path or soname tried, with the dynamic loader's reason.
        tried: Vec<(String, String)>,
        /// The variable that names the library instead.
        var: &'static str,
    },
    /// The library opened but lacks an entry point.
    MissingSymbol {
        /// The symbol.
        symbol: String,
        /// The path or soname the library was opened as.
        library: String,
        /// The dynamic loader's reason.
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { tried, var } => {
                let tried: Vec<String> = tried
                    .iter()
                    .map(|(p, why)| format!("{p} ({why})"))
                    .collect();
                write!(
                    f,
                    "library not found: tried {}; set {var} to its path",
                    tried.join(", ")
                )
            }
            LoadError::MissingSymbol {
                symbol,
                library,
                reason,
            } => write!(f, "symbol {symbol} missing from {library}: {reason}"),
        }
    }
}

/// An opened library, kept open for the life of the process (vendor runtimes and
/// verbs providers must outlive every object they made).
pub(crate) struct Library {
    lib: libloading::Library,
    /// The path or soname it was opened as.
    pub name: String,
}

impl Library {
    /// Opens the library `src` describes: its override path if set (and only that),
    /// else the first of its sonames that loads.
    pub(crate) fn open(src: &Source) -> Result<Library, LoadError> {
        let candidates: Vec<String> = match &src.path {
            Some(p) => vec![p.clone()],
            None => src.sonames.iter().map(|s| s.to_string()).collect(),
        };
        let mut tried = Vec::new();
        for name in candidates {
            let flags = if src.bind_now {
                libc::RTLD_NOW | libc::RTLD_LOCAL
            } else {
                libc::RTLD_LAZY | libc::RTLD_LOCAL
            };
            // SAFETY: loading a vendor library runs its initialisers; these are the
            // libraries the vendors document for exactly this use (NCCL, PyTorch and
            // cudarc load them the same way). RTLD_LOCAL keeps their symbols out of
            // the global namespace.
            match unsafe { libloading::os::unix::Library::open(Some(&name), flags) } {
                Ok(lib) => {
                    return Ok(Library {
                        lib: lib.into(),
                        name,
                    })
                }
                Err(e) => tried.push((name, e.to_string())),
            }
        }
        Err(LoadError::NotFound {
            tried,
            var: src.var,
        })
    }

    /// Symbol `name` as a `T` (a function pointer type).
    ///
    /// # Safety
    /// `T` must be the symbol's true C signature.
    pub(crate) unsafe fn symbol<T: Copy>(&self, name: &str) -> Result<T, LoadError> {
        // SAFETY: the caller vouches for `T`; the library stays loaded for the life of
        // the process, so the copied pointer never dangles.
        unsafe { self.lib.get::<T>(name.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| LoadError::MissingSymbol {
                symbol: name.to_string(),
                library: self.name.clone(),
                reason: e.to_string(),
            })
    }
}

/// An entry point a library may lack: its absence does not stop the library
/// loading, only the calls that need it ([`Optional::get`] names it then).
#[derive(Clone)]
pub(crate) struct Optional<T> {
    f: Option<T>,
    name: String,
}

impl<T: Copy> Optional<T> {
    /// Looks up `name` in `lib`.
    ///
    /// # Safety
    /// `T` must be the symbol's true C signature.
    pub(crate) unsafe fn load(lib: &Library, name: String) -> Optional<T> {
        // SAFETY: the caller vouches for `T`.
        let f = unsafe { lib.symbol::<T>(&name) }.ok();
        Optional { f, name }
    }

    /// The entry point, if the library has it.
    pub(crate) fn ok(&self) -> Option<T> {
        self.f
    }

    /// The symbol's name, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// Declares a foreign library's symbol table: a struct of typed function pointers,
/// one per entry point, and an `unsafe fn bind(lib, prefix)` that looks each up as
/// `prefix` + its name (`prefix` lets runtimes that share an API under different
/// prefixes, such as `hip*` and `musa*`, share one table). Required entry points
/// fail the bind with [`LoadError::MissingSymbol`]; those in `@optional { }` become
/// [`Optional`].
///
/// ```ignore
/// foreign_api! {
///     /// The entry points of libfoo.
///     pub(crate) struct FooApi {
///         init: "fooInit" => fn(c_uint) -> c_int;
///         @optional {
///             launch: "fooLaunch" => fn(*mut c_void) -> c_int;
///         }
///     }
/// }
/// // SAFETY: the declared signatures are foo.h's.
/// let api = unsafe { FooApi::bind(&lib, "") }?;
/// ```
macro_rules! foreign_api {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $field:ident : $sym:literal => fn($($arg:ty),* $(,)?) -> $ret:ty; )*
            $( @optional {
                $( $ofield:ident : $osym:literal => fn($($oarg:ty),* $(,)?) -> $oret:ty; )*
            } )?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( pub $field: unsafe extern "C" fn($($arg),*) -> $ret, )*
            $($( pub $ofield: $crate::foreign::Optional<unsafe extern "C" fn($($oarg),*) -> $oret>, )*)?
        }

        impl $name {
            /// Binds every entry point of this table in `lib`, each named `prefix`
            /// followed by its declared name.
            ///
            /// # Safety
            /// The declared signatures must be the library's.
            #[allow(dead_code)]
            $vis unsafe fn bind(
                lib: &$crate::foreign::Library,
                prefix: &str,
            ) -> ::std::result::Result<$name, $crate::foreign::LoadError> {
                Ok($name {
                    // SAFETY: the caller vouches for the declared signatures.
                    $( $field: unsafe { lib.symbol(&format!("{prefix}{}", $sym))? }, )*
                    // SAFETY: as above.
                    $($( $ofield: unsafe {
                        $crate::foreign::Optional::load(lib, format!("{prefix}{}", $osym))
                    }, )*)?
                })
            }
        }
    };
}
pub(crate) use foreign_api;
