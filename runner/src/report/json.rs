//! JSON lines: one JSON object per event, flushed as it happens, so the file
//! can be followed with `tail -f` and read back with `ensemble-protocol`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ensemble_protocol::Event;

use super::Reporter;

pub struct JsonLines {
    out: Box<dyn Write + Send>,
}

impl JsonLines {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { out: Box::new(std::io::BufWriter::new(file)) })
    }

    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }
}

impl Reporter for JsonLines {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}
