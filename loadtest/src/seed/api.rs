//! The portable path for any homeserver: accounts through the shared-secret
//! admin registration API, rooms through `createRoom` with an invite and the
//! member's `join`. Much slower than COPY (every account costs the server a
//! password hash, every room a handful of event writes), so for the
//! side-by-side runs at small N.

use std::{path::Path, sync::Arc};

use futures::{StreamExt as _, TryStreamExt as _};

use crate::{
    client::Client,
    metrics::Metrics,
    population::{self, Account, Member, PopulationWriter, Shape},
    progress,
};

/// Concurrent registrations: enough to keep a server's 2 cores busy.
const CONCURRENCY: usize = 8;

/// Seeds `shape` into the server at `base_url` and writes the population file.
pub async fn seed(base_url: &str, shared_secret: &str, shape: Shape, population_path: &Path) -> anyhow::Result<()> {
    let client = Client::new(base_url, Arc::new(Metrics::default()))?;
    let mut population = PopulationWriter::create(population_path)?;

    let staff_bar = progress::bar(shape.staff_count() as u64, "staff");
    let staff: Vec<Account> = futures::stream::iter(0..shape.staff_count())
        .map(|index| {
            let (client, staff_bar) = (&client, &staff_bar);
            async move {
                let account = client.register_with_shared_secret(shared_secret, &population::staff_localpart(index), population::PASSWORD).await?;
                staff_bar.inc(1);
                anyhow::Ok(account)
            }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    staff_bar.finish();
    for account in &staff {
        population.staff(account)?;
    }

    let bar = progress::bar(shape.members as u64, "members");
    let mut members = futures::stream::iter(0..shape.members)
        .map(|index| {
            let (client, staff) = (&client, &staff);
            async move {
                let account = client.register_with_shared_secret(shared_secret, &population::member_localpart(index), population::PASSWORD).await?;
                let staff_index = shape.staff_of(index);
                let room_id = client.create_direct_room(&staff[staff_index].access_token, &account.user_id).await?;
                client.join(&account.access_token, &room_id).await?;
                anyhow::Ok(Member { account, room_id, staff: staff_index })
            }
        })
        .buffered(CONCURRENCY);
    while let Some(member) = members.try_next().await? {
        population.member(&member)?;
        bar.inc(1);
    }
    bar.finish();
    population.finish()
}
