//! Port I/O devices: COM1 (8250 UART, vm-superio) and the i8042 controller, whose only job here
//! is the guest's reset request (`reboot=k`), which ends the VMM.

use std::io::Write;
use std::sync::Arc;

use vm_superio::{I8042Device, Serial};
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_LEN: u16 = 8;
pub const I8042_BASE: u16 = 0x60;
pub const I8042_LEN: u16 = 5;

/// All port I/O of the guest. Ports nobody claims read as all ones, as on real hardware.
pub struct PortBus {
    serial: Serial<EventFdTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
    i8042: I8042Device<EventFdTrigger>,
}

impl PortBus {
    /// `serial_irq` is signalled when the UART raises its interrupt; `reset` when the guest asks
    /// the i8042 for a CPU reset.
    pub fn new(
        output: Box<dyn Write + Send>,
        serial_irq: Arc<EventFd>,
        reset: Arc<EventFd>,
    ) -> Self {
        PortBus {
            serial: Serial::new(EventFdTrigger(serial_irq), output),
            i8042: I8042Device::new(EventFdTrigger(reset)),
        }
    }

    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        let value = match port {
            p if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&p) && data.len() == 1 => {
                self.serial.read((p - COM1_BASE) as u8)
            }
            p if (I8042_BASE..I8042_BASE + I8042_LEN).contains(&p) && data.len() == 1 => {
                self.i8042.read((p - I8042_BASE) as u8)
            }
            _ => 0xff,
        };
        data.fill(value);
    }

    pub fn write(&mut self, port: u16, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        let result = match port {
            p if (COM1_BASE..COM1_BASE + COM1_LEN).contains(&p) => self
                .serial
                .write((p - COM1_BASE) as u8, data[0])
                .map_err(|e| format!("{e:?}")),
            p if (I8042_BASE..I8042_BASE + I8042_LEN).contains(&p) => self
                .i8042
                .write((p - I8042_BASE) as u8, data[0])
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(port, "port write failed: {e}");
        }
    }

    pub fn flush(&mut self) {
        let _ = self.serial.writer_mut().flush();
    }
}

/// The most of the guest's console a file keeps: the guest writes what it likes to its
/// serial port, and the file lives on the host (usually under /run, a tmpfs: host memory).
/// What matters for diagnosis, the boot, comes first.
pub const CONSOLE_LIMIT: u64 = 1 << 20;

/// A writer that passes the first `limit` bytes on, says once that it stopped, and swallows
/// the rest (the guest must never block on its console).
pub struct Capped<W> {
    inner: W,
    left: u64,
    said: bool,
}

impl<W: Write> Capped<W> {
    pub fn new(inner: W, limit: u64) -> Self {
        Capped {
            inner,
            left: limit,
            said: false,
        }
    }
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        if n > 0 {
            let written = self.inner.write(&buf[..n])?;
            self.left -= written as u64;
            return Ok(written);
        }
        if !self.said {
            self.said = true;
            let _ = self
                .inner
                .write_all(b"\n[strata: console output past this point is not kept]\n");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn console_output_stops_at_its_limit() {
        let sink = Sink::default();
        let mut w = Capped::new(sink.clone(), 5);
        w.write_all(b"abc").unwrap();
        w.write_all(b"defgh").unwrap();
        w.write_all(b"ijk").unwrap();
        let got = sink.0.lock().unwrap().clone();
        assert!(
            got.starts_with(b"abcde\n[strata: console output"),
            "{got:?}"
        );
        assert_eq!(got.iter().filter(|b| **b == b'[').count(), 1);
    }

    #[test]
    fn serial_output_and_i8042_reset() {
        let sink = Sink::default();
        let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let reset = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut bus = PortBus::new(Box::new(sink.clone()), irq, reset.clone());
        for b in b"hi\n" {
            bus.write(COM1_BASE, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        assert!(reset.read().is_err(), "no reset before the guest asks");
        bus.write(I8042_BASE + 4, &[0xfe]);
        assert_eq!(reset.read().unwrap(), 1);
        let mut unclaimed = [0u8; 1];
        bus.read(0x80, &mut unclaimed);
        assert_eq!(unclaimed, [0xff]);
    }
}
