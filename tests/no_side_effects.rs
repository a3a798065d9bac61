//! Using the library changes nothing process-wide behind its host's back: building, training,
//! predicting, saving and loading leave the allocator settings as they were. (A binary of its own,
//! so that no other test's opt-in can interfere.)

mod common;

use backprop::prelude::*;

#[test]
fn the_library_never_tunes_the_allocator_by_itself() {
    let data = common::lines(64, 1);
    let mut model = Sequential::builder(&[1, 8, 8])
        .add(Conv2d::new(1, 4, 3).padding(1))
        .add(Relu::new())
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(64, 4))
        .build()
        .unwrap();
    model
        .fit(&data, &CrossEntropyLoss::new(), &mut Adam::new(0.01), FitOptions::new().verbose(false))
        .unwrap();
    model.predict(data.inputs(), 16).unwrap();
    let bytes = model.to_safetensors().unwrap();
    model.load_safetensors(&bytes, "memory").unwrap();
    assert!(!backprop::alloc_tuning::is_tuned());
    // The opt-in does what it says (on Linux with glibc).
    let tuned = backprop::alloc_tuning::tune_allocator();
    assert_eq!(backprop::alloc_tuning::is_tuned(), tuned);
    assert_eq!(tuned, cfg!(all(target_os = "linux", target_env = "gnu")));
}
