//! A function with a hand-written gradient inside MLX's autodiff: MLX's `custom_vjp`, which
//! mlx-rs 0.33 does not wrap (mlx-sys binds it). [`custom_vjp`] runs `forward` on the inputs
//! now and returns its outputs as arrays whose vector-Jacobian product, when a surrounding
//! `value_and_grad` asks for it, is `backward(primals, cotangents, outputs)`.
//!
//! This is how Ring Attention across ranks joins the forecaster's training: MLX's send and
//! receive have no gradient, and the ring's backward pass is a collective of its own
//! ([`RingAttention::backward`](super::RingAttention::backward)).
//!
//! Both functions are owned by MLX once given (a payload freed by MLX's destructor call), so
//! they borrow nothing (`'static`); whatever they need at call time, they find through their
//! captured values. MLX may drop them on another thread, so they must be `Send`.
//!
//! A function that fails makes MLX raise "mlx_closure returned a non-zero value"; its own
//! error is kept for the caller: [`take_failure`].
use super::DistributedError;
use super::group::capture;
use mlx_rs::Array;
use mlx_rs::error::Exception;
use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    /// The error of the last function of ours that failed on this thread.
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The error a [`custom_vjp`] function last returned (or panicked with) on this thread, if
/// any; taking it clears it.
pub fn take_failure() -> Option<String> {
    FAILURE.with_borrow_mut(Option::take)
}

/// `forward(inputs)` as arrays whose vector-Jacobian product is `backward(primals,
/// cotangents, outputs)`, which returns one gradient per input (same shapes). See the module
/// documentation.
pub fn custom_vjp<F, B>(inputs: &[Array], forward: F, backward: B) -> Result<Vec<Array>, DistributedError>
where
    F: FnMut(&[Array]) -> Result<Vec<Array>, Exception> + Send + 'static,
    B: FnMut(&[Array], &[Array], &[Array]) -> Result<Vec<Array>, Exception> + Send + 'static,
{
    // SAFETY: the payloads are boxed closures handed to mlx-c with their matching
    // trampolines and destructors; mlx-c keeps them in `shared_ptr`s that call the destructor
    // once when the last copy of the closure goes away.
    let (function, gradient) = unsafe {
        (
            mlx_sys::mlx_closure_new_func_payload(
                Some(forward_trampoline::<F>),
                Box::into_raw(Box::new(forward)).cast(),
                Some(drop_payload::<F>),
            ),
            mlx_sys::mlx_closure_custom_new_func_payload(
                Some(backward_trampoline::<B>),
                Box::into_raw(Box::new(backward)).cast(),
                Some(drop_payload::<B>),
            ),
        )
    };
    // SAFETY: `mlx_closure_new` gives an empty closure for `mlx_custom_vjp` to set.
    let mut wrapped = unsafe { mlx_sys::mlx_closure_new() };
    let made = capture("custom_vjp", || {
        // SAFETY: all three are valid closures; `wrapped` is written, the others only read.
        (unsafe { mlx_sys::mlx_custom_vjp(&mut wrapped, function, gradient) }, ())
    });
    // SAFETY: our handles to the two closures; `wrapped` holds its own copies of them.
    unsafe {
        mlx_sys::mlx_closure_free(function);
        mlx_sys::mlx_closure_custom_free(gradient);
    }
    let applied = made.and_then(|()| {
        let arguments = vector_of(inputs);
        // SAFETY: `mlx_vector_array_new` gives an empty vector for the result.
        let mut result = unsafe { mlx_sys::mlx_vector_array_new() };
        let status = capture("custom_vjp apply", || {
            // SAFETY: `wrapped` and `arguments` are valid; `result` is written.
            (unsafe { mlx_sys::mlx_closure_apply(&mut result, wrapped, arguments) }, ())
        });
        // SAFETY: `arguments` is ours, freed once.
        unsafe { mlx_sys::mlx_vector_array_free(arguments) };
        let outputs = status.and_then(|()| arrays_of(result).map_err(DistributedError::from));
        // SAFETY: `result` is ours, freed once (the arrays taken from it hold their own references).
        unsafe { mlx_sys::mlx_vector_array_free(result) };
        outputs
    });
    // SAFETY: `wrapped` is ours; the arrays it made keep what they need.
    unsafe { mlx_sys::mlx_closure_free(wrapped) };
    applied.map_err(|error| match take_failure() {
        Some(failure) => DistributedError::Invalid(failure),
        None => error,
    })
}

/// A new mlx-c vector holding (references to) `arrays`; the caller frees it.
fn vector_of(arrays: &[Array]) -> mlx_sys::mlx_vector_array {
    let handles: Vec<mlx_sys::mlx_array> = arrays.iter().map(Array::as_ptr).collect();
    // SAFETY: `handles` are valid arrays for the length given; mlx-c copies them into the vector.
    unsafe { mlx_sys::mlx_vector_array_new_data(handles.as_ptr(), handles.len()) }
}

/// The arrays of an mlx-c vector (each with its own reference).
fn arrays_of(vector: mlx_sys::mlx_vector_array) -> Result<Vec<Array>, Exception> {
    // SAFETY: `vector` is a valid vector for the duration of the call.
    let size = unsafe { mlx_sys::mlx_vector_array_size(vector) };
    (0..size)
        .map(|index| {
            // SAFETY: `mlx_array_new` gives an empty handle that `mlx_vector_array_get` sets to
            // element `index < size`; `from_ptr` takes ownership of that reference.
            unsafe {
                let mut element = mlx_sys::mlx_array_new();
                if mlx_sys::mlx_vector_array_get(&mut element, vector, index) != 0 {
                    mlx_sys::mlx_array_free(element);
                    return Err(Exception::custom(format!("cannot read element {index} of an MLX vector")));
                }
                Ok(Array::from_ptr(element))
            }
        })
        .collect()
}

/// Set a closure's result to a new vector of `arrays`. mlx-c passes an empty handle (no
/// vector behind it, so nothing to free) and frees what it finds there after the call.
fn fill(result: *mut mlx_sys::mlx_vector_array, arrays: &[Array]) {
    // SAFETY: mlx-c passes a valid pointer to write the result handle to.
    unsafe { *result = vector_of(arrays) };
}

/// Run `f` as the body of a closure called by MLX: its error or panic becomes a failure
/// status, kept for [`take_failure`].
fn guarded(f: impl FnOnce() -> Result<c_int, Exception>) -> c_int {
    let message = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(status)) => return status,
        Ok(Err(error)) => error.what().to_string(),
        Err(panic) => match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
            (Some(text), _) => format!("panicked: {text}"),
            (_, Some(text)) => format!("panicked: {text}"),
            _ => "panicked".to_string(),
        },
    };
    FAILURE.with_borrow_mut(|failure| *failure = Some(message));
    1
}

unsafe extern "C" fn forward_trampoline<F>(
    result: *mut mlx_sys::mlx_vector_array,
    inputs: mlx_sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int
where
    F: FnMut(&[Array]) -> Result<Vec<Array>, Exception>,
{
    guarded(|| {
        // SAFETY: `payload` is the `Box<F>` given with this trampoline, alive while MLX holds it.
        let forward = unsafe { &mut *payload.cast::<F>() };
        let outputs = forward(&arrays_of(inputs)?)?;
        fill(result, &outputs);
        Ok(0)
    })
}

unsafe extern "C" fn backward_trampoline<B>(
    result: *mut mlx_sys::mlx_vector_array,
    primals: mlx_sys::mlx_vector_array,
    cotangents: mlx_sys::mlx_vector_array,
    outputs: mlx_sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int
where
    B: FnMut(&[Array], &[Array], &[Array]) -> Result<Vec<Array>, Exception>,
{
    guarded(|| {
        // SAFETY: `payload` is the `Box<B>` given with this trampoline, alive while MLX holds it.
        let backward = unsafe { &mut *payload.cast::<B>() };
        let gradients = backward(&arrays_of(primals)?, &arrays_of(cotangents)?, &arrays_of(outputs)?)?;
        fill(result, &gradients);
        Ok(0)
    })
}

unsafe extern "C" fn drop_payload<T>(payload: *mut c_void) {
    if !payload.is_null() {
        // SAFETY: `payload` came from `Box::into_raw(Box<T>)` and MLX calls this once.
        drop(unsafe { Box::from_raw(payload.cast::<T>()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::transforms::value_and_grad_with_argnums;

    #[test]
    fn the_given_gradient_replaces_the_traced_one() {
        // f(x, y) = x · y forward, with a deliberately different gradient (3, 5) per element,
        // so the test tells the custom gradient from MLX's own.
        let loss = |a: &[Array]| -> Result<Vec<Array>, Exception> {
            let outputs = custom_vjp(
                &a[..2],
                |inputs: &[Array]| Ok(vec![inputs[0].multiply(&inputs[1])?]),
                |primals: &[Array], cotangents: &[Array], _: &[Array]| {
                    Ok(vec![
                        cotangents[0]
                            .multiply(Array::from_f32(3.0))?
                            .add(primals[0].multiply(Array::from_f32(0.0))?)?,
                        cotangents[0]
                            .multiply(Array::from_f32(5.0))?
                            .add(primals[1].multiply(Array::from_f32(0.0))?)?,
                    ])
                },
            )
            .map_err(|e| Exception::custom(e.to_string()))?;
            Ok(vec![outputs[0].multiply(&a[2])?.sum(None)?])
        };
        let x = Array::from_slice(&[1.0f32, 2.0], &[2]);
        let y = Array::from_slice(&[4.0f32, 8.0], &[2]);
        let w = Array::from_slice(&[1.0f32, 10.0], &[2]);
        let (value, gradients) = value_and_grad_with_argnums(loss, &[0, 1][..])(&[x, y, w]).unwrap();
        assert_eq!(value[0].item_exact::<f32>(), 4.0 + 160.0);
        assert_eq!(gradients[0].as_slice::<f32>(), &[3.0, 30.0]);
        assert_eq!(gradients[1].as_slice::<f32>(), &[5.0, 50.0]);
    }

    #[test]
    fn a_failing_gradient_is_an_error_with_its_message() {
        let loss = |a: &[Array]| -> Result<Vec<Array>, Exception> {
            let outputs = custom_vjp(
                a,
                |inputs: &[Array]| Ok(vec![inputs[0].square()?]),
                |_: &[Array], _: &[Array], _: &[Array]| Err(Exception::custom("the ring lost a rank")),
            )
            .map_err(|e| Exception::custom(e.to_string()))?;
            Ok(vec![outputs[0].sum(None)?])
        };
        let x = Array::from_slice(&[1.0f32, 2.0], &[2]);
        let result = value_and_grad_with_argnums(loss, &[0][..])(&[x]);
        assert!(result.is_err());
        assert_eq!(take_failure().as_deref(), Some("the ring lost a rank"));
        assert_eq!(take_failure(), None, "taking the failure clears it");
    }
}
