//! Resident memory of the servers, from /proc/<pid>/status: a thread samples
//! VmRSS and VmHWM every 20 ms for the whole run; a window (e.g. a 1 GiB
//! transfer) resets the kernel's high-water mark (`clear_refs` 5) at its start
//! and reads it at its end, so short peaks between samples are not missed.

use std::{
    collections::HashMap,
    fs,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

const INTERVAL: Duration = Duration::from_millis(20);

#[derive(Default, Clone, Copy)]
struct Track {
    pid: u32,
    /// Highest RSS or HWM seen over the whole run (bytes).
    peak: u64,
    /// Highest since the current window started, if one is open.
    window: Option<u64>,
}

pub struct RssMonitor {
    tracks: Arc<Mutex<HashMap<String, Track>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// (VmRSS, VmHWM) in bytes.
fn read_status(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn sample(tracks: &Mutex<HashMap<String, Track>>) {
    let mut tracks = tracks.lock().expect("rss lock");
    for t in tracks.values_mut() {
        if let Some((rss, hwm)) = read_status(t.pid) {
            let m = rss.max(hwm);
            t.peak = t.peak.max(m);
            if let Some(w) = t.window.as_mut() {
                // HWM was reset when the window opened, so it is the window's.
                *w = (*w).max(m);
            }
        }
    }
}

impl RssMonitor {
    pub fn start() -> Self {
        let tracks: Arc<Mutex<HashMap<String, Track>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (tracks, stop) = (tracks.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sample(&tracks);
                    std::thread::sleep(INTERVAL);
                }
            })
        };
        RssMonitor {
            tracks,
            stop,
            handle: Some(handle),
        }
    }

    pub fn watch(&self, label: &str, pid: u32) {
        self.tracks.lock().expect("rss lock").insert(
            label.to_string(),
            Track {
                pid,
                ..Track::default()
            },
        );
        sample(&self.tracks);
    }

    /// Start a window for `label`: take a sample, then reset the kernel's HWM.
    pub fn window_start(&self, label: &str) {
        sample(&self.tracks);
        let mut tracks = self.tracks.lock().expect("rss lock");
        if let Some(t) = tracks.get_mut(label) {
            let _ = fs::write(format!("/proc/{}/clear_refs", t.pid), "5");
            t.window = Some(read_status(t.pid).map_or(0, |(rss, _)| rss));
        }
    }

    /// End the window: the highest RSS in it (bytes).
    pub fn window_end(&self, label: &str) -> u64 {
        sample(&self.tracks);
        let mut tracks = self.tracks.lock().expect("rss lock");
        tracks
            .get_mut(label)
            .and_then(|t| t.window.take())
            .unwrap_or(0)
    }

    /// Highest RSS over the run so far (bytes); samples once more first.
    pub fn peak(&self, label: &str) -> u64 {
        sample(&self.tracks);
        self.tracks
            .lock()
            .expect("rss lock")
            .get(label)
            .map_or(0, |t| t.peak)
    }

    /// Current RSS (bytes).
    pub fn current(&self, label: &str) -> u64 {
        let pid = self
            .tracks
            .lock()
            .expect("rss lock")
            .get(label)
            .map(|t| t.pid);
        pid.and_then(read_status).map_or(0, |(rss, _)| rss)
    }
}

impl Drop for RssMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
