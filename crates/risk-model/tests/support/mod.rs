pub mod deploy_world;
