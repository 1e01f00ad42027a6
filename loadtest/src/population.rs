//! The population file: every seeded account with the access token the
//! scenarios use, and each member's room and staff account.
//!
//! One file for both seeding paths (COPY for our server, the admin API for
//! any server), so the scenarios never care how the accounts were made.
//! Tab-separated, staff lines first, so a scenario that needs only the
//! first members stops reading early even in a 10-million-member file.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, BufWriter, Write as _},
    path::Path,
};

use anyhow::{Context as _, bail};

/// The password of every seeded account (the login storm logs in with it).
pub const PASSWORD: &str = "loadtest-password";

/// One seeded account with a device and a token.
#[derive(Clone, Debug)]
pub struct Account {
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
}

/// An insured member: their account, their room and the index of the staff
/// account that serves it.
#[derive(Clone, Debug)]
pub struct Member {
    pub account: Account,
    pub room_id: String,
    pub staff: usize,
}

/// What the scenarios read back.
#[derive(Debug, Default)]
pub struct Population {
    pub staff: Vec<Account>,
    pub members: Vec<Member>,
}

/// The shape of a seeded population.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub members: usize,
    /// How many members' rooms one staff account serves.
    pub members_per_staff: usize,
}

impl Shape {
    pub fn staff_count(&self) -> usize {
        self.members.div_ceil(self.members_per_staff).max(1)
    }

    /// The staff account serving member `member` (round robin, so any
    /// prefix of the members spreads over as many staff as possible).
    pub fn staff_of(&self, member: usize) -> usize {
        member % self.staff_count()
    }
}

/// Localpart of member `index`.
pub fn member_localpart(index: usize) -> String {
    format!("member{index}")
}

/// Localpart of staff account `index`.
pub fn staff_localpart(index: usize) -> String {
    format!("staff{index}")
}

/// Writes the population file line by line while seeding.
pub struct PopulationWriter(BufWriter<File>);

impl PopulationWriter {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(BufWriter::new(file)))
    }

    pub fn staff(&mut self, account: &Account) -> anyhow::Result<()> {
        writeln!(self.0, "staff\t{}\t{}\t{}", account.user_id, account.device_id, account.access_token)?;
        Ok(())
    }

    pub fn member(&mut self, member: &Member) -> anyhow::Result<()> {
        let a = &member.account;
        writeln!(self.0, "member\t{}\t{}\t{}\t{}\t{}", a.user_id, a.device_id, a.access_token, member.room_id, member.staff)?;
        Ok(())
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        self.0.flush()?;
        Ok(())
    }
}

impl Population {
    /// Reads all staff and the first `members` members of the file.
    pub fn load(path: &Path, members: usize) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening population file {} (run `loadtest seed` first)", path.display()))?;
        let mut population = Population::default();
        for (number, line) in BufReader::new(file).lines().enumerate() {
            let line = line?;
            let fields: Vec<&str> = line.split('\t').collect();
            let account = |f: &[&str]| Account { user_id: f[1].to_owned(), device_id: f[2].to_owned(), access_token: f[3].to_owned() };
            match fields.as_slice() {
                ["staff", _, _, _] => population.staff.push(account(&fields)),
                ["member", _, _, _, room, staff] => {
                    if population.members.len() == members {
                        break;
                    }
                    let staff = staff.parse().with_context(|| format!("line {}: staff index", number + 1))?;
                    population.members.push(Member { account: account(&fields), room_id: (*room).to_owned(), staff });
                }
                _ => bail!("{}: line {} is not a population line", path.display(), number + 1),
            }
        }
        if population.members.len() < members {
            bail!("{} holds {} members, the scenario needs {members}", path.display(), population.members.len());
        }
        Ok(population)
    }

    /// The staff accounts that serve the loaded members (each once).
    pub fn serving_staff(&self) -> Vec<usize> {
        let mut staff: Vec<usize> = self.members.iter().map(|m| m.staff).collect();
        staff.sort_unstable();
        staff.dedup();
        staff
    }
}
