//! `erlmcp stdio`: one client on stdin/stdout, until stdin closes.

use super::CliError;
use super::common::CommonArgs;
use crate::logging;
use crate::node;

pub(super) fn run(args: CommonArgs) -> Result<(), CliError> {
    let config = args.config()?;
    logging::init(&config.log.level);
    let rt = super::runtime()?;
    let shutdown = {
        let _in = rt.enter();
        node::signals::terminated()
    };
    Ok(rt.block_on(node::stdio::run(&config, shutdown))?)
}
